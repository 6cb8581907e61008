"""Rendering of `git keepsake ls`."""

from __future__ import annotations

import json

from ..checkpoint import Checkpoint
from ..experiment import Experiment
from ..metadata import to_wire


def _checkpoint_cell(checkpoint: Checkpoint | None) -> str:
    if checkpoint is None:
        return ""
    parts = [f"step {checkpoint.step}"] if checkpoint.step is not None else []
    value = checkpoint.primary_metric_value()
    if value is not None:
        parts.append(f"{checkpoint.primary_metric['name']}: {value:.6g}")
    return f"{checkpoint.short_id()} ({'; '.join(parts)})" if parts else checkpoint.short_id()


def _differing_params(experiments: list[Experiment]) -> list[str]:
    """Param names whose values differ between experiments (all of them for a single one)."""
    names = sorted({k for e in experiments for k in (e.params or {})})
    if len(experiments) <= 1:
        return names
    return [
        n
        for n in names
        if len({json.dumps(to_wire((e.params or {}).get(n)), sort_keys=True) for e in experiments})
        > 1
    ]


def render_ls(experiments: list[Experiment], as_json: bool = False, quiet: bool = False) -> str:
    if quiet:
        return "".join(e.id + "\n" for e in experiments)
    if as_json:
        rows = [
            {
                "id": e.id,
                "created": e.to_json()["created"],
                "params": e.params,
                "command": e.command,
                "num_checkpoints": len(e.checkpoints),
                "latest_checkpoint": e.latest().to_json() if e.latest() else None,
                "best_checkpoint": e.best().to_json() if e.best() else None,
                "user": e.user,
                "host": e.host,
                "running": e.is_running(),
            }
            for e in experiments
        ]
        return json.dumps(to_wire(rows), indent=2) + "\n"
    from tabulate import tabulate

    params = _differing_params(experiments)
    table = [
        [
            e.short_id(),
            e.created.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
            "running" if e.is_running() else "stopped",
            ", ".join(f"{n}={(e.params or {}).get(n)}" for n in params),
            _checkpoint_cell(e.best()),
            _checkpoint_cell(e.latest()),
        ]
        for e in experiments
    ]
    headers = ["EXPERIMENT", "STARTED", "STATUS", "PARAMS", "BEST CHECKPOINT", "LATEST CHECKPOINT"]
    return tabulate(table, headers=headers, tablefmt="plain") + "\n"
