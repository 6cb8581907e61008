"""`git keepsake sync`: reconcile git and blob storage, both ways."""

from __future__ import annotations

import click

from .app import App


@click.command()
@click.pass_obj
def sync(app: App):
    """Reconcile git and blob storage. Runs that ended before their checkpoints were stored
    (killed, crashed, out of network) have their staged files uploaded and their metadata
    written; runs still going are left alone. Experiments in storage but not in git (recorded
    elsewhere, or by Keepsake 0.4.2) get git refs: a snapshot commit made from their tarball,
    and their metadata. An experiment whose metadata can't be read is reported and
    skipped; the others are synced (and the exit status is 1).

    \b
    Example:
        git keepsake sync
    """
    from ..adopt import adopt
    from ..errors import CorruptRepository
    from ..recovery import recover

    project = app.project
    recovered = recover(project)
    for done in recovered:
        click.echo(f"recovered {done.describe()}")
    adopted, unreadable, removing = adopt(project)
    if adopted:
        shown = ", ".join(i[:7] for i in adopted)
        click.echo(f"brought {len(adopted)} experiment(s) from storage into git: {shown}")
    for experiment_id in removing:
        app.say(
            f"experiment {experiment_id[:7]} was being removed here, not brought back; "
            f"to finish removing it: git keepsake rm {experiment_id[:7]}"
        )
    for line in unreadable:
        app.say(f"skipped {line}")
    if unreadable:
        raise CorruptRepository(
            f"{len(unreadable)} experiment(s) in {project.repository.url} could not be read",
            hint="fix or remove the metadata files named above, then run git keepsake sync again",
        )
    if not recovered and not adopted and not removing:
        click.echo(
            "nothing to recover: no unfinished runs"
            + (", and git has every experiment in storage" if project.git else "")
        )
