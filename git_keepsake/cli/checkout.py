"""`git keepsake checkout`: restore an experiment's code and a checkpoint's files."""

from __future__ import annotations

import shlex
import sys
from typing import TYPE_CHECKING

import click

from .app import App

if TYPE_CHECKING:
    from ..checkout import CheckoutPlan

CONFLICTS_SHOWN = 20
PROGRESS_MIN_BYTES = 10 * 1000 * 1000  # smaller checkouts are over before a bar helps


@click.command()
@click.argument("id")
@click.option(
    "-o", "--output-directory", metavar="DIR", help="Where to write (default: the project dir)."
)
@click.option("-f", "--force", is_flag=True, help="Overwrite changed files without asking.")
@click.option("--path", metavar="P", help="Only this file or folder (project-relative).")
@click.pass_obj
def checkout(app: App, id, output_directory, force, path):
    """Copy an experiment's code and its best (else latest) checkpoint's files, or a checkpoint's
    files and its experiment's code, into the project directory.

    Code comes from the experiment's git snapshot when the repository has it, else from blob
    storage; checkpoint files from blob storage. Existing files that differ are listed and
    overwritten only when confirmed (or with -f); without a terminal, a line on standard
    input answers (`echo y | git keepsake checkout ID`). Nothing is ever deleted.

    \b
    Example:
        git keepsake checkout b60bf65
        git keepsake checkout 4ed2649 -o /tmp/run --path model.pth
    """
    from ..checkout import CheckoutError, WouldOverwrite, choose_checkpoint, plan_checkout

    project = app.project
    target = project.catalog.find(id)
    experiment, checkpoint, reason = choose_checkpoint(target)
    app.say(_what(experiment, checkpoint, reason) + (f", only {path}" if path else ""))

    progress = _Progress(enabled=sys.stderr.isatty())
    try:
        plan = plan_checkout(
            project, target, output_directory, path=path, progress=progress, log=app.say
        )
    finally:
        progress.close()
    with plan:
        if plan.code_source:
            app.say(f"  code from the {plan.code_description}")
        for note in plan.notes:
            app.say(f"note: {note}")
        conflicts = plan.conflicts
        if conflicts and not force:
            _list_conflicts(app, plan)
            refusal = WouldOverwrite(plan.output_dir, conflicts)
            if not app.confirm(
                f"Overwrite {len(conflicts)} changed file(s)?",
                refusal=refusal.message,
                hint="use -f to overwrite them",
                piped=True,
            ):
                raise CheckoutError("checkout cancelled: nothing was written")
        result = plan.apply()
    directory = str(result.output_dir)
    app.say(
        f"Checked out to {directory}: {len(result.written)} file(s) written, "
        f"{len(result.unchanged)} unchanged"
    )
    if experiment.command_line:
        app.say(f"To run it again: cd {shlex.quote(directory)} && {experiment.command_line}")
    else:
        app.say("The command that started it was not recorded.")


def _what(experiment, checkpoint, reason: str | None) -> str:
    eid = experiment.short_id()
    if checkpoint is None:
        return f"Checking out experiment {eid}"
    step = f"step {checkpoint.step}"
    if reason == "asked":
        return f"Checking out checkpoint {checkpoint.short_id()} ({step}) of experiment {eid}"
    if reason == "best":
        name = checkpoint.primary_metric["name"]
        value = checkpoint.primary_metric_value()
        return (
            f"Checking out experiment {eid} and its best checkpoint {checkpoint.short_id()} "
            f"({step}, {name}={value:.6g})"
        )
    return (
        f"Checking out experiment {eid} and its latest checkpoint {checkpoint.short_id()} "
        f"({step}; no checkpoint has a primary metric to pick the best by)"
    )


def _list_conflicts(app: App, plan: CheckoutPlan) -> None:
    conflicts = plan.conflicts
    app.say(f"These files in {plan.output_dir} differ from the checkout's:")
    for rel in conflicts[:CONFLICTS_SHOWN]:
        app.say(f"  {rel}")
    if len(conflicts) > CONFLICTS_SHOWN:
        app.say(f"  ... and {len(conflicts) - CONFLICTS_SHOWN} more")


class _Progress:
    """A progress bar on stderr, shown only on a terminal and for big checkouts."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            if not self.enabled or total < PROGRESS_MIN_BYTES:
                return
            self.bar = click.progressbar(
                length=total, label=f"Extracting {total / 1e6:,.0f} MB", file=sys.stderr
            )
            self.bar.__enter__()
        self.bar.update(done - self.bar.pos)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
