"""The `git keepsake` command line: parses, calls the library, renders. Errors become one line.

Each command lives in its own module (`cli/<command>.py`) and imports the library lazily, so
`git keepsake -h` costs little more than starting Python.
"""

from __future__ import annotations

import gc
import os
import sys
import traceback

import click

from .. import __version__
from ..errors import KeepsakeError
from ..text import printable
from .app import App, add_common_options

ISSUES_URL = "https://github.com/git-keepsake/git-keepsake/issues"


# Keepsake's names for our commands, so its scripts run unchanged: not listed among the
# commands (as Keepsake doesn't list them either), named once in the main help.
ALIASES = {"list": "ls", "delete": "rm", "processes": "ps"}


class KeepsakeGroup(click.Group):
    """Turns library errors into `error: ...` + `hint: ...` and exit 1; ^C into 130."""

    def get_command(self, ctx, cmd_name):
        return super().get_command(ctx, ALIASES.get(cmd_name, cmd_name))

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeepsakeError as e:  # messages quote names and values from repositories
            click.echo(f"error: {printable(e.message, lines=True)}", err=True)
            if e.hint:
                click.echo(f"hint: {printable(e.hint, lines=True)}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            ctx.exit(130)
        except BrokenPipeError:
            # `git keepsake ls | head`: the reader left; that is not an error.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(0)


@click.group(cls=KeepsakeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="git-keepsake")
@click.option(
    "-R",
    "--repository",
    metavar="URL",
    help="Repository URL, e.g. file:///data/keepsake (default: from keepsake.yaml).",
)
@click.option(
    "-D",
    "--project-directory",
    metavar="DIR",
    type=click.Path(file_okay=False),
    help="Project directory (default: nearest parent with keepsake.yaml, else the git root).",
)
@click.option("-v", "--verbose", is_flag=True, help="Say more; show tracebacks of internal errors.")
@click.option(
    "--color/--no-color",
    default=None,
    help="Color the output (default: when writing to a terminal and NO_COLOR is unset).",
)
@click.pass_context
def cli(ctx, repository, project_directory, verbose, color):
    """Version control for machine-learning experiments, native to git.

    Experiments are recorded by `git_keepsake.init()` and `experiment.checkpoint()` in a
    training script; these commands list, compare and restore them. IDs may be any
    unambiguous prefix of an experiment or checkpoint ID. Keepsake's command names work
    too: list (ls), delete (rm), processes (ps).

    \b
    Example:
        git keepsake ls
        git keepsake ls --filter "loss < 0.2" --sort loss
        git keepsake show 3f8a508
        git keepsake diff 3f8a508 b60bf65
        git keepsake checkout b60bf65
    """
    ctx.obj = App(repository, project_directory, verbose, color)


def _register() -> None:
    from . import checkout, diff, ls, rm, share, show, sync

    commands = (ls.ls, ls.ps, show.show, diff.diff, checkout.checkout, rm.rm)
    for command in (*commands, share.push, share.pull, sync.sync, share.install, share.uninstall):
        cli.add_command(add_common_options(command))


_register()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code: 0 ok, 1 a known error, 2 usage, 3 a bug, 130 ^C."""
    verbose = any(a in ("-v", "--verbose") for a in (sys.argv[1:] if argv is None else argv))
    # A short-lived process that builds tens of thousands of objects, none of them garbage:
    # the cyclic GC would walk them over and over (a third of a 10,000-experiment `ls`).
    collecting = gc.isenabled()
    gc.disable()
    try:
        # Without standalone mode click returns ctx.exit()'s code instead of exiting.
        code = cli.main(args=argv, prog_name="git keepsake", standalone_mode=False)
        if isinstance(code, int):
            return code
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.UsageError as e:
        # One line like every other error, not click's usage block.
        command = e.ctx.command_path if e.ctx else "git keepsake"
        message = e.format_message()
        click.echo(f"error: {message[:1].lower()}{message[1:]}", err=True)
        click.echo(f"hint: see: {command} -h", err=True)
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    except Exception as e:  # a bug: a short report, not a wall of traceback
        if verbose:
            traceback.print_exc()
        click.echo(f"error: internal error: {type(e).__name__}: {printable(str(e))}", err=True)
        click.echo(
            f"hint: this is a bug in git-keepsake {__version__}; please report it at "
            f"{ISSUES_URL}" + ("" if verbose else " (run with -v for the traceback)"),
            err=True,
        )
        return 3
    finally:
        if collecting:
            gc.enable()  # main() also runs inside other processes (tests, scripts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
