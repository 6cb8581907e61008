"""`git keepsake ls` and `git keepsake ps`: experiments as a table, JSON, or IDs."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from ..filters import FILTER_HELP
from . import format as fmt
from .app import App
from .format import checkpoint_cell, commit_cell, relative_time, value_text

if TYPE_CHECKING:
    from ..experiment import Experiment

FILTER_EXAMPLES = (
    "\b\nFilters: NAME OP VALUE, OP one of = != < <= > >=; sort: KEY or KEY-desc.\n" + (FILTER_HELP)
)


def _list_options(command):
    for option in reversed(
        [
            click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts)."),
            click.option("-q", "--quiet", is_flag=True, help="Only print experiment IDs."),
            click.option(
                "-a",
                "--all",
                "all_params",
                is_flag=True,
                help="Show every param, not only those that differ.",
            ),
            click.option(
                "--filter",
                "filters",
                multiple=True,
                metavar="EXPR",
                help='Keep experiments matching EXPR, e.g. "loss < 0.5" (repeatable, ANDed).',
            ),
            click.option(
                "--sort",
                metavar="KEY[-desc]",
                default="created",
                show_default=True,
                help="Sort by a field, param or metric.",
            ),
            click.option("--limit", type=click.IntRange(min=0), metavar="N", help="Show N rows."),
        ]
    ):
        command = option(command)
    return command


@click.command(epilog=FILTER_EXAMPLES)
@_list_options
@click.pass_obj
def ls(app: App, as_json, quiet, all_params, filters, sort, limit):
    """List experiments: params that differ, best and latest checkpoints.

    \b
    Example:
        git keepsake ls
        git keepsake ls --filter "accuracy > 0.9" --sort loss
        git keepsake ls --sort created-desc --limit 5
        git keepsake ls -q | xargs -n1 git keepsake show
    """
    _run(app, as_json, quiet, all_params, filters, sort, limit)


@click.command(epilog=FILTER_EXAMPLES)
@_list_options
@click.pass_obj
def ps(app: App, as_json, quiet, all_params, filters, sort, limit):
    """List running experiments (ls --filter "status = running").

    \b
    Example:
        git keepsake ps
    """
    _run(app, as_json, quiet, all_params, ("status = running", *filters), sort, limit, running=True)


def _run(app: App, as_json, quiet, all_params, filters, sort, limit, running=False) -> None:
    from ..filters import apply_filters, sort_experiments

    experiments = app.project.experiments.list()
    experiments = sort_experiments(apply_filters(experiments, filters), sort)
    if limit is not None:
        experiments = experiments[:limit]
    if quiet:
        click.echo("".join(e.id + "\n" for e in experiments), nl=False)
    elif as_json:
        click.echo(json.dumps([ls_json(e) for e in experiments], indent=2))
    elif not experiments and running and len(filters) == 1:
        app.out("no running experiments")  # Keepsake's words, on stdout as it printed them
    elif not experiments:
        app.say("no experiments" + (" match the filters" if filters else " yet"))
    else:
        app.out(render_table(app, experiments, all_params))
        waiting = sum(not e.uploaded for e in experiments)
        if waiting:
            app.say(
                f"hint: {waiting} experiment(s) not uploaded to {app.project.repository.url} "
                "yet (their writes failed, or are under way): git keepsake sync uploads them"
            )
    _say_unpushed(app)


def _say_unpushed(app: App) -> None:
    from ..team import unpushed_line

    project = app.project
    dirs = project.git_dirs if project.is_own_repository else None
    if dirs and (line := unpushed_line(dirs[1])):
        app.say(f"hint: {line}")


def ls_json(experiment: Experiment) -> dict[str, Any]:
    """Keepsake 0.4.2's `ls --json` object, plus status and the git fields."""
    from ..metadata import to_wire

    best, latest = experiment.best(), experiment.latest()
    running = experiment.is_running()
    return to_wire(
        {
            "id": experiment.id,
            "created": experiment.created_text,
            "params": experiment.params or {},
            "command": experiment.command or "",
            "num_checkpoints": experiment.checkpoint_count(),
            "latest_checkpoint": latest.to_json() if latest else None,
            "best_checkpoint": best.to_json() if best else None,
            "user": experiment.user or "",
            "host": experiment.host or "",
            "running": running,
            "status": experiment.status(),
            "git": experiment.git.to_json() if experiment.git else None,
        }
    )


def _same_key(value: Any) -> Any:
    """A hashable stand-in that is equal for equal values of the same type (1 and 1.0 and
    True differ, as they print differently)."""
    if type(value) in (str, int, float, bool) or value is None:
        return (type(value), value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str)
    return id(value)  # `object()`: a missing value, unlike any other


def _differing(values_by_experiment: list[Any]) -> bool:
    """Whether the values are not all the same (a missing value, `object()`, differs)."""
    return len({_same_key(v) for v in values_by_experiment}) > 1


def shown_params(experiments: list[Experiment], all_params: bool) -> list[str]:
    """Param names to show: those whose values differ (every one with --all or one row)."""
    names = sorted({k for e in experiments for k in (e.params or {})})
    if all_params or len(experiments) <= 1:
        return names
    from ..metadata import to_wire

    missing = object()
    return [
        n
        for n in names
        if _differing([to_wire((e.params or {}).get(n, missing)) for e in experiments])
    ]


def render_table(app: App, experiments: list[Experiment], all_params: bool = False) -> str:
    params = shown_params(experiments, all_params)
    with_git = any(e.git for e in experiments)
    users = _differing([e.user for e in experiments])
    hosts = _differing([e.host for e in experiments])
    headers = ["EXPERIMENT", "STARTED", "STATUS"]
    headers += ["COMMIT"] * with_git + ["USER"] * users + ["HOST"] * hosts
    headers += ["PARAMS", "BEST CHECKPOINT", "LATEST CHECKPOINT"]
    rows = []
    cells: dict[str, str] = {}
    reference = fmt.now()
    for e in experiments:
        row = [
            e.short_id(),
            relative_time(e.created, reference),
            e.status(),
        ]
        if with_git:
            row.append(commit_cell(e.git))
        if users:
            row.append(e.user or "")
        if hosts:
            row.append(e.host or "")
        own = e.params or {}
        row.append(", ".join(f"{n}={value_text(own[n])}" for n in params if n in own))
        row.append(checkpoint_cell(e.best(), cells))
        row.append(checkpoint_cell(e.latest(), cells))
        rows.append(row)
    return app.table(headers, rows)
