"""Writes share/man/man1/git-keepsake.1 from the click command tree, so the man page can't drift.

`git keepsake --help` is turned by git into `man git-keepsake`; the wheel installs this page
into `<prefix>/share/man/man1/`, where man finds it from the `bin/` on PATH.

    python tools/make_manpage.py           # rewrite the page
    python tools/make_manpage.py --check   # exit 1 if the committed page is stale (a test runs it)
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MANPAGE = ROOT / "share" / "man" / "man1" / "git-keepsake.1"
PROG = "git keepsake"

# What click can't know: the files and variables the library reads.
FILES = [
    (
        "keepsake.yaml, keepsake.yml",
        "Project settings (repository, git_max_file_size), looked for in the current directory "
        "and the folders above it. The folder holding it is the project directory.",
    ),
    (
        ".keepsake/",
        "The default repository (file://.keepsake): experiments and checkpoints in Keepsake "
        "0.4.2's layout, readable by Keepsake itself. Kept out of git through .git/info/exclude.",
    ),
    (
        "refs/keepsake/experiments/<id>",
        "The snapshot commit of an experiment: the code as it was when the run started.",
    ),
    (
        "refs/keepsake/metadata/<id>",
        "A commit holding the experiment's metadata (.keepsake/experiment.json), kept current "
        "while it runs.",
    ),
    (
        ".git/keepsake/",
        "Local state: staging for writes in progress and index.sqlite, a cache of experiment "
        "summaries that makes listing fast. Deleting the index only costs one slow listing.",
    ),
    (
        "$XDG_CACHE_HOME/git-keepsake/projects/",
        "The same local state for a project outside git (default ~/.cache).",
    ),
]
ENVIRONMENT = [
    ("NO_COLOR", "If set, output is not coloured, as with --no-color."),
    (
        "GIT_KEEPSAKE_STRICT",
        "Set to 1 to turn storage warnings into errors. By default a failed write is retried, "
        "then reported as a warning, and training goes on.",
    ),
    ("XDG_CACHE_HOME", "Where local state is kept for a project outside git."),
]
SEE_ALSO = r"\fBgit\fR(1), \fBgit\-diff\fR(1), \fBgit\-push\fR(1), \fBgit\-fetch\fR(1)"


def escape(text: str) -> str:
    """Plain text as troff: backslashes and minus signs literal, no line read as a request."""
    text = text.replace("\\", r"\e").replace("-", r"\-")
    return "\n".join(
        rf"\&{line}" if line.startswith((".", "'")) else line for line in text.split("\n")
    )


def quoted(text: str) -> str:
    return '"' + escape(text).replace('"', r"\(dq") + '"'


def help_paragraphs(text: str) -> list[str]:
    """Click's help text as troff paragraphs: prose reflowed, `\\b` paragraphs kept as written."""
    text = inspect.cleandoc(text).split("\f")[0]
    out = []
    for block in _blocks(text):
        if block[0].strip() == "\b":
            # Kept line by line, indentation included, as click's own --help keeps it.
            out.append(".PP\n.nf\n" + escape("\n".join(block[1:])) + "\n.fi")
        else:
            out.append(".PP\n" + escape(" ".join(line.strip() for line in block)))
    return out


def _blocks(text: str) -> list[list[str]]:
    blocks: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.strip():
            blocks[-1].append(line)
        elif blocks[-1]:
            blocks.append([])
    return [b for b in blocks if b]


def option_tag(record: str) -> str:
    r"""`-R, --repository TEXT` -> `\fB\-R\fR, \fB\-\-repository\fR \fITEXT\fR`."""
    words = []
    for word in record.split(" "):
        comma = "," if word.endswith(",") else ""
        word = word.removesuffix(",")
        if word.startswith("-"):
            words.append(rf"\fB{escape(word)}\fR{comma}")
        elif word in ("/", ""):
            words.append(word + comma)
        else:
            words.append(rf"\fI{escape(word)}\fR{comma}")
    return " ".join(words)


def options(ctx, command, *, skip_help: bool) -> list[str]:
    help_names = set(ctx.help_option_names)
    out = []
    for param in command.get_params(ctx):
        if skip_help and help_names & set(param.opts):
            continue
        record = param.get_help_record(ctx)
        # Hidden options have no record; an argument without help is in the synopsis already.
        if record is None or not record[0].startswith("-") and not record[1]:
            continue
        out.append(f".TP\n{option_tag(record[0])}\n{escape(record[1])}")
    return out


def usage(ctx, command) -> str:
    pieces = " ".join(command.collect_usage_pieces(ctx))
    return rf"\fB{escape(ctx.command_path)}\fR {escape(pieces)}".rstrip()


def walk(ctx):
    """(context, command) for every visible subcommand, depth first, in click's order."""
    import click

    group = ctx.command
    if not isinstance(group, click.Group):
        return
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        sub = click.Context(command, info_name=name, parent=ctx, **command.context_settings)
        yield sub, command
        yield from walk(sub)


def render() -> str:
    sys.path.insert(0, str(ROOT))
    import click

    from git_keepsake import __version__
    from git_keepsake.cli import cli

    ctx = click.Context(cli, info_name=PROG, **cli.context_settings)
    commands = list(walk(ctx))
    summary = inspect.cleandoc(cli.help or "").split("\n")[0].rstrip(".")
    lines = [
        r".\" Generated by tools/make_manpage.py from the click commands. Do not edit.",
        f'.TH GIT\\-KEEPSAKE 1 "" "git\\-keepsake {escape(__version__)}" "Git Keepsake Manual"',
        ".SH NAME",
        rf"git\-keepsake \- {escape(summary)}",
        ".SH SYNOPSIS",
        ".nf",
        usage(ctx, cli),
        *(usage(sub, command) for sub, command in commands),
        ".fi",
        ".SH DESCRIPTION",
        *help_paragraphs(cli.help or ""),
        ".PP",
        rf"Installed as \fBgit\-keepsake\fR, so git runs it as \fB{PROG}\fR:"
        rf" \fB{PROG} \-\-help\fR opens this page, \fB{PROG} \-h\fR prints a short help.",
        ".SH GLOBAL OPTIONS",
        escape("Given before the command. -h and --help also work after any command."),
        *options(ctx, cli, skip_help=False),
        ".SH COMMANDS",
    ]
    for sub, command in commands:
        lines += [f".SS {quoted(sub.command_path)}", usage(sub, command)]
        lines += help_paragraphs(command.help or command.short_help or "")
        lines += options(sub, command, skip_help=True)
    lines.append(".SH FILES")
    for name, text in FILES:
        lines.append(f".TP\n\\fI{escape(name)}\\fR\n{escape(text)}")
    lines.append(".SH ENVIRONMENT")
    for name, text in ENVIRONMENT:
        lines.append(f".TP\n\\fB{escape(name)}\\fR\n{escape(text)}")
    lines += [".SH SEE ALSO", SEE_ALSO, ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    args = parser.parse_args()
    text = render()
    relative = MANPAGE.relative_to(ROOT)
    if args.check:
        current = MANPAGE.read_text() if MANPAGE.is_file() else None
        if current != text:
            print(
                f"{relative} is stale (regenerate it: python tools/make_manpage.py)",
                file=sys.stderr,
            )
            return 1
        return 0
    MANPAGE.parent.mkdir(parents=True, exist_ok=True)
    MANPAGE.write_text(text)
    print(f"wrote {relative}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
