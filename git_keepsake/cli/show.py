"""`git keepsake show`: one experiment or checkpoint in full."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from ..text import printable
from .app import App, fields
from .format import absolute_time, metric_text, value_text

if TYPE_CHECKING:
    from ..checkpoint import Checkpoint
    from ..experiment import Experiment


@click.command()
@click.argument("id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
@click.pass_obj
def show(app: App, id, as_json):
    """Show an experiment (its git commit, params, environment and checkpoints) or a
    checkpoint (its metrics and its experiment). ID is any unambiguous prefix.

    \b
    Example:
        git keepsake show 3f8a508
        git keepsake show 4ed2649 --json
    """
    from ..experiment import Experiment

    found = app.project.catalog.find(id)
    if as_json:
        click.echo(json.dumps(show_json(found), indent=2))
    elif isinstance(found, Experiment):
        app.out(render_experiment(app, found))
    else:
        app.out(render_checkpoint(app, found))


def show_json(found: Experiment | Checkpoint) -> dict[str, Any]:
    """An experiment: its metadata as stored (Keepsake's `show --json`). A checkpoint: its
    metadata, with its experiment's (without the other checkpoints) under "experiment"."""
    from ..experiment import Experiment
    from ..metadata import to_wire

    if isinstance(found, Experiment):
        return to_wire({**found.to_json(), "params": found.params or {}})
    experiment = found.experiment
    head = experiment.head_json()
    return to_wire({**found.to_json(), "experiment": {**head, "params": experiment.params or {}}})


def experiment_sections(app: App, experiment: Experiment, with_id: bool = False) -> list[str]:
    """The fields, git, params, system and packages of an experiment, as show prints them."""
    running = experiment.is_running()
    lines = fields(
        [("ID", experiment.id)] * with_id
        + [
            ("Created", absolute_time(experiment.created)),
            ("Status", "running" if running else "stopped"),
            ("Host", experiment.host or ""),
            ("User", experiment.user or ""),
            ("Command", experiment.command or ""),
            ("Path", experiment.path or "(no snapshot)"),
        ],
    )
    git = experiment.git
    if git is not None:
        head = git.commit or "(no commits yet)"
        state = [git.branch or "detached HEAD"]
        if git.dirty:
            state.append("with uncommitted changes")
        commit = f"{head} ({', '.join(state)})"
        if git.recorded_outside_git:
            commit = "(recorded outside git; `sync` made the snapshot from its tarball)"
        pairs = [("Commit", commit)]
        pairs.append(("Snapshot", git.snapshot or ""))
        if git.remote:
            pairs.append(("Remote", git.remote))
        lines += ["", app.bold("Git"), *fields(pairs)]
    params = experiment.params or {}
    lines += ["", app.bold("Params")]
    lines += fields([(k, value_text(params[k])) for k in sorted(params)]) or ["(none)"]
    system = [("Python version", experiment.python_version or "")]
    if experiment.keepsake_version:
        system.append(("Recorded by", f"keepsake {experiment.keepsake_version}"))
    lines += ["", app.bold("System"), *fields(system)]
    packages = experiment.python_packages or {}
    lines += ["", app.bold("Python packages")]
    lines += fields([(k, packages[k]) for k in sorted(packages)]) or ["(none)"]
    return lines


def render_experiment(app: App, experiment: Experiment) -> str:
    lines = [app.heading(f"Experiment: {experiment.id}"), ""]
    lines += experiment_sections(app, experiment)
    lines += ["", app.bold("Checkpoints")]
    checkpoints = experiment.checkpoints
    if not checkpoints:
        lines.append("(none)")
        return "\n".join(lines)
    best = experiment.best()
    names = sorted({n for c in checkpoints for n in (c.metrics or {})})
    headers = ["", "ID", "STEP", "CREATED", "PATH", *(n.upper() for n in names)]
    rows = [
        [
            "*" if c == best else "",
            c.short_id(),
            "" if c.step is None else str(c.step),
            c.created.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
            "(files removed)" if c.files_removed else c.path or "",
            *(metric_text((c.metrics or {})[n]) if n in (c.metrics or {}) else "" for n in names),
        ]
        for c in checkpoints
    ]
    lines.append(app.table(headers, rows))
    if best is not None:
        goal = "lowest" if best.primary_metric.get("goal") == "minimize" else "highest"
        lines += ["", f"* best: {goal} {printable(best.primary_metric['name'])}"]
    return "\n".join(lines)


def render_checkpoint(app: App, checkpoint: Checkpoint) -> str:
    experiment = checkpoint.experiment
    pairs = [
        ("Created", absolute_time(checkpoint.created)),
        (
            "Path",
            "(files removed)" if checkpoint.files_removed else checkpoint.path or "(no files)",
        ),
        ("Step", "" if checkpoint.step is None else str(checkpoint.step)),
    ]
    if checkpoint.primary_metric:
        primary = checkpoint.primary_metric
        pairs.append(("Primary metric", f"{primary['name']} ({primary.get('goal', '')})"))
        if checkpoint == experiment.best():
            pairs[-1] = (pairs[-1][0], pairs[-1][1] + ", the experiment's best")
    lines = [app.heading(f"Checkpoint: {checkpoint.id}"), "", *fields(pairs)]
    metrics = checkpoint.metrics or {}
    lines += ["", app.bold("Metrics")]
    lines += fields([(k, value_text(metrics[k])) for k in sorted(metrics)]) or ["(none)"]
    lines += ["", app.bold("Experiment"), *experiment_sections(app, experiment, with_id=True)]
    return "\n".join(lines)
