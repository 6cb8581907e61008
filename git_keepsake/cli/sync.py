"""`git keepsake sync`: finish what earlier runs of the project left unwritten."""

from __future__ import annotations

import click

from .app import App


@click.command()
@click.pass_obj
def sync(app: App):
    """Finish the writes of runs that ended before their checkpoints were stored (killed,
    crashed, or out of network): upload their staged files, then record their metadata in
    blob storage and git. Runs still going are left alone.

    \b
    Example:
        git keepsake sync
    """
    from ..recovery import recover

    project = app.project
    done = recover(project)
    for recovered in done:
        click.echo(f"recovered {recovered.describe()}")
    if not done:
        click.echo(f"nothing to recover: no unfinished runs of {project.directory}")
