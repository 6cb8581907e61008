"""What every command shares: the project (made on first use), color, and plain-text tables."""

from __future__ import annotations

import os
import sys
from functools import cached_property
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import InvalidArgument, NotFound
from ..text import printable
from .format import display_width

if TYPE_CHECKING:
    from ..project import Project


class App:
    """The global options, handed to each command as click's context object."""

    def __init__(
        self,
        repository: str | None = None,
        project_directory: str | None = None,
        verbose: bool = False,
        color: bool | None = None,
    ):
        self.repository = repository
        self.project_directory = project_directory
        self.verbose = verbose
        if color is None:
            color = "NO_COLOR" not in os.environ and sys.stdout.isatty()
        self.color = color

    def work_dir(self) -> Path:
        """Where git commands run: -D if given, else here."""
        return Path(self.project_directory or ".").resolve()

    @cached_property
    def project(self) -> Project:
        from ..project import Project

        project = Project(repository=self.repository, directory=self.project_directory)
        # A mistyped -R would otherwise read as an empty repository ("no experiments").
        if self.repository is not None and not project.repository.is_present():
            raise NotFound(
                f"there is no repository at {self.repository}",
                hint="check the -R URL (a repository is made by the first experiment "
                "recorded into it)",
            )
        from ..checkout import remove_abandoned_staging

        remove_abandoned_staging(project.directory)  # what a killed checkout left
        return project

    # --- output: data to stdout, messages to stderr ---

    def out(self, text: str = "") -> None:
        click.echo(text, color=self.color)

    def say(self, text: str) -> None:
        """A message on stderr; messages quote names and paths from the repository."""
        click.echo(printable(text, lines=True), err=True, color=self.color)

    def confirm(self, question: str, refusal: str, hint: str, piped: bool = False) -> bool:
        """Ask on stderr. Without a terminal (a pipe, /dev/null, CI) no answer is a refusal
        with `hint`, never a silent yes. With `piped`, a line on stdin answers, as Keepsake's
        scripts do (`echo y | keepsake checkout ID`); otherwise `yes |` does not answer."""
        if sys.stdin is None or not sys.stdin.isatty():
            line = sys.stdin.readline() if piped and sys.stdin is not None else ""
            if not line.strip():
                raise InvalidArgument(refusal, hint=hint)
            click.echo(f"{question} [y/N]: {line.strip()}", err=True)
            return line.strip().lower() in ("y", "yes")
        try:
            return click.confirm(question, default=False, err=True)
        except click.exceptions.Abort:
            click.echo("", err=True)
            raise InvalidArgument(refusal, hint=hint) from None

    def bold(self, text: str) -> str:
        return click.style(text, bold=True) if self.color else text

    def dim(self, text: str) -> str:
        return click.style(text, dim=True) if self.color else text

    def heading(self, text: str) -> str:
        return click.style(text, bold=True, underline=True) if self.color else text

    def table(self, headers: list[str], rows: list[list[str]]) -> str:
        """Left-aligned columns two spaces apart (tabulate's "plain", at a fraction of the
        cost: `ls` renders 10,000 rows), padded to terminal columns (`display_width`), with
        control characters escaped (`printable`): cells come from untrusted repositories."""
        # All printable ASCII, the common case: one check for the table, then len and ljust.
        special: dict[int, tuple[list[str], list[int]]] = {}
        flat = "".join(chain.from_iterable(rows))
        if not (flat.isascii() and flat.isprintable()):
            for r, row in enumerate(rows):
                joined = "".join(row)
                if not (joined.isascii() and joined.isprintable()):
                    cells = [printable(cell) for cell in row]
                    special[r] = cells, [display_width(cell) for cell in cells]
        head = [printable(h) for h in headers]
        head_widths = [display_width(h) for h in head]
        widths = head_widths.copy()
        for row in [row for r, row in enumerate(rows) if r not in special] if special else rows:
            for i, cell in enumerate(row):
                if len(cell) > widths[i]:
                    widths[i] = len(cell)
        for _, cell_widths in special.values():
            for i, n in enumerate(cell_widths):
                if n > widths[i]:
                    widths[i] = n
        last = len(headers) - 1

        def line(cells: list[str]) -> str:
            return "  ".join(
                cell if i == last else cell.ljust(widths[i]) for i, cell in enumerate(cells)
            ).rstrip()

        def wide_line(cells: list[str], cell_widths: list[int]) -> str:
            return "  ".join(
                cell if i == last else cell + " " * (widths[i] - cell_widths[i])
                for i, cell in enumerate(cells)
            ).rstrip()

        if special:
            body = [
                wide_line(*special[r]) if r in special else line(row) for r, row in enumerate(rows)
            ]
        else:
            body = [line(row) for row in rows]
        return "\n".join([self.bold(wide_line(head, head_widths)), *body])


def _set(name: str):
    def callback(ctx: click.Context, param: click.Parameter, value):
        if value is not None and (value or name == "color"):
            setattr(ctx.find_object(App), name, value)

    return callback


def add_common_options(command: click.Command) -> click.Command:
    """-R, -D, -v and --color after the command name too (`git keepsake ls -R URL`), as
    Keepsake 0.4 took them; they override the same options given before it."""
    command.params += [
        click.Option(
            ["-R", "--repository"],
            metavar="URL",
            expose_value=False,
            callback=_set("repository"),
            help="Repository URL (default: from keepsake.yaml).",
        ),
        click.Option(
            ["-D", "--project-directory"],
            metavar="DIR",
            type=click.Path(file_okay=False),
            expose_value=False,
            callback=_set("project_directory"),
            help="Project directory (default: nearest parent with keepsake.yaml).",
        ),
        click.Option(
            ["-v", "--verbose"],
            is_flag=True,
            expose_value=False,
            callback=_set("verbose"),
            help="Say more.",
        ),
        click.Option(
            ["--color/--no-color"],
            default=None,
            expose_value=False,
            callback=_set("color"),
            help="Color the output (default: on a terminal, unless NO_COLOR is set).",
        ),
    ]
    return command


def fields(pairs: list[tuple[str, str]]) -> list[str]:
    """`Name:   value` lines with the values aligned, in terminal columns (`display_width`),
    names and values escaped (`printable`)."""
    if not pairs:
        return []
    names = [printable(name) + ":" for name, _ in pairs]
    name_widths = [display_width(name) for name in names]
    width = max(name_widths) + 1  # one space after the longest "Name:"
    return [
        f"{name}{' ' * (width - n)}{printable(value)}".rstrip()
        for name, n, (_, value) in zip(names, name_widths, pairs, strict=True)
    ]
