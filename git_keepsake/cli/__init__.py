"""The `git keepsake` command line: parses, calls the library, renders. Errors become one line."""

from __future__ import annotations

import sys

import click

from .. import __version__
from ..errors import KeepsakeError


class KeepsakeGroup(click.Group):
    """Turns library errors into `error: ...` + `hint: ...` and exit 1; ^C into 130."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeepsakeError as e:
            click.echo(f"error: {e.message}", err=True)
            if e.hint:
                click.echo(f"hint: {e.hint}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            ctx.exit(130)


@click.group(cls=KeepsakeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="git-keepsake")
@click.option("-R", "--repository", help="Repository URL (default: from keepsake.yaml).")
@click.option(
    "-D", "--project-directory", type=click.Path(file_okay=False), help="Project directory."
)
@click.pass_context
def cli(ctx, repository, project_directory):
    """Version control for machine-learning experiments, native to git.

    \b
    Example:
        git keepsake ls
    """
    from ..project import Project

    ctx.obj = Project(repository=repository, directory=project_directory)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("-q", "--quiet", is_flag=True, help="Only print experiment IDs.")
@click.pass_obj
def ls(project, as_json, quiet):
    """List experiments, oldest first.

    \b
    Example:
        git keepsake ls
        git keepsake ls --json
    """
    from .ls import render_ls

    click.echo(render_ls(project.experiments.list(), as_json=as_json, quiet=quiet), nl=False)


def main(argv: list[str] | None = None) -> int:
    try:
        # Without standalone mode click returns ctx.exit()'s code instead of exiting.
        code = cli.main(args=argv, prog_name="git keepsake", standalone_mode=False)
        if isinstance(code, int):
            return code
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
