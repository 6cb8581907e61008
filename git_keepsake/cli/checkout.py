"""`git keepsake checkout`: restore an experiment's code and a checkpoint's files."""

from __future__ import annotations

import click

from .app import App


@click.command()
@click.argument("id")
@click.pass_obj
def checkout(app: App, id):
    """Copy an experiment's or checkpoint's files into the project directory (coming next).

    \b
    Example:
        git keepsake checkout b60bf65
    """
    raise click.ClickException("git keepsake checkout is not implemented yet")
