"""`git keepsake rm`: delete experiments or checkpoints, after saying what will go."""

from __future__ import annotations

import click

from .app import App


@click.command()
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@click.option("-f", "--force", is_flag=True, help="Delete without asking.")
@click.pass_obj
def rm(app: App, ids, force):
    """Delete experiments (their refs, note line, metadata, heartbeat and tarballs) or single
    checkpoints (their tarball and their entry in the experiment's metadata).

    \b
    Example:
        git keepsake rm 3f8a508
        git keepsake rm 4ed2649 df1f5de -f
    """
    from ..remove import apply_removal, plan_removal

    removals = plan_removal(app.project, list(ids))
    lines = [line for removal in removals for line in removal.describe()]
    app.say("This will delete:")
    for line in lines:
        app.say(f"  {line}")
    if not force and not app.confirm(
        f"Delete {len(lines)} item(s)?",
        refusal="nothing deleted: no terminal to confirm on",
        hint="use -f to delete without asking",
    ):
        app.say("nothing deleted")
        raise click.exceptions.Exit(1)
    for removal in removals:
        apply_removal(app.project, removal)
    app.say(f"deleted {len(lines)} item(s)")
