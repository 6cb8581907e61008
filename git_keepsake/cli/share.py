"""`git keepsake push` and `git keepsake pull`: share experiments through a git remote."""

from __future__ import annotations

import click

from .app import App


@click.command()
@click.argument("remote", default="origin")
@click.pass_obj
def push(app: App, remote):
    """Push experiments to a git remote (default: origin): first finish the uploads of runs
    that ended early, so the weights a pushed experiment names are in storage, then push
    refs/keepsake/* and the notes. The pre-push hook does this on every `git push`.

    \b
    Example:
        git keepsake push
        git keepsake push upstream
    """
    from ..sharing import not_adopted_line
    from ..sharing import push as push_experiments
    from ..team import per_clone_storage_line

    pushed = push_experiments(app.project, remote)
    for recovered in pushed.recovered:
        click.echo(f"recovered {recovered.describe()}")
    if pushed.upload_problem:
        click.echo(
            f"warning: some runs' uploads are not finished ({pushed.upload_problem}); their "
            "newest checkpoints go with the next push",
            err=True,
        )
    if pushed.notes_problem:
        click.echo(
            f"warning: notes on commits not pushed ({pushed.notes_problem}); they go with the "
            "next push",
            err=True,
        )
    if line := not_adopted_line(pushed.not_adopted, remote):
        click.echo(line)
    click.echo(f"pushed {pushed.experiments} experiment(s) to {remote}")
    if line := per_clone_storage_line(app.project):
        click.echo(f"warning: {line}", err=True)


@click.command()
@click.argument("remote", default="origin")
@click.option(
    "--include-removed",
    is_flag=True,
    help="Bring back experiments removed here with `git keepsake rm` too.",
)
@click.pass_obj
def pull(app: App, remote, include_removed):
    """Fetch experiments from a git remote (default: origin) and merge them with the ones here;
    the notes on commits are rebuilt, never left in conflict. Experiments removed here with
    `git keepsake rm` stay removed (removing is local: the remote keeps them for the team),
    unless --include-removed.

    \b
    Example:
        git keepsake pull
        git keepsake ls
    """
    from ..sharing import not_adopted_line
    from ..sharing import pull as pull_experiments

    pulled = pull_experiments(app.project, remote, include_removed)
    if pulled.notes_problem:
        click.echo(f"warning: notes on commits not rebuilt ({pulled.notes_problem})", err=True)
    click.echo(f"from {remote}: {pulled.created} new experiment(s), {pulled.updated} updated")
    if line := not_adopted_line(pulled.not_adopted, remote):
        click.echo(line)


@click.command()
@click.option("--force", is_flag=True, help="Replace another tool's pre-push hook.")
@click.pass_obj
def install(app: App, force):
    """Install the pre-push hook: every `git push` then pushes your experiments too, after
    finishing any unfinished uploads. A pre-push hook already there keeps running first.

    \b
    Example:
        git keepsake install
        GIT_KEEPSAKE_SKIP_PUSH=1 git push    # once without experiments
    """
    from ..hook import install as install_hook
    from ..team import per_clone_storage_line

    click.echo(install_hook(app.work_dir(), force))
    if line := per_clone_storage_line(app.project):
        click.echo(f"warning: {line}", err=True)


@click.command()
@click.pass_obj
def uninstall(app: App):
    """Remove the pre-push hook, putting back the one that was there before.

    \b
    Example:
        git keepsake uninstall
    """
    from ..hook import uninstall as uninstall_hook

    click.echo(uninstall_hook(app.work_dir()))
