"""Comparing two experiments or checkpoints: what `git keepsake diff` shows, as data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .checkout import choose_checkpoint
from .metadata import to_wire
from .records import CheckpointRecord, ExperimentRecord, GitInfo
from .workspace import Workspace

NOT_SET = object()  # a value one side has and the other does not


@dataclass
class Side:
    """One side of a comparison: an experiment, and the checkpoint it stands for (if any)."""

    experiment: ExperimentRecord
    checkpoint: CheckpointRecord | None
    why: str | None  # "asked", "best", "latest"; None without checkpoints


@dataclass
class Comparison:
    a: Side
    b: Side
    # section name -> [(field, value of a, value of b)]; NOT_SET where a side lacks it
    sections: dict[str, list[tuple[str, Any, Any]]] = field(default_factory=dict)
    code: str | None = None  # git diff --stat (or the patch); None when it can't be compared
    code_note: str = ""  # why the code was not compared, or "" when it was


def side(found: ExperimentRecord | CheckpointRecord) -> Side:
    """An experiment stands for its best checkpoint, else its latest (see choose_checkpoint)."""
    return Side(*choose_checkpoint(found))


def compare(project: Workspace, a: str, b: str, patch: bool = False) -> Comparison:
    """The differences between two experiments or checkpoints (IDs or prefixes)."""
    left, right = (side(found) for found in project.catalog.find_all([a, b]))
    result = Comparison(left, right)
    ea, eb = left.experiment, right.experiment
    ga, gb = ea.git or GitInfo(keys=()), eb.git or GitInfo(keys=())

    experiment = [("ID", ea.short_id(), eb.short_id()), ("Created", ea.created, eb.created)]
    for name, va, vb in [
        ("Status", _status(ea), _status(eb)),
        ("User", ea.user or "", eb.user or ""),
        ("Host", ea.host or "", eb.host or ""),
        ("Command", ea.command or "", eb.command or ""),
        ("Path", ea.path or "", eb.path or ""),
        ("Python version", ea.python_version or "", eb.python_version or ""),
        ("Git commit", (ga.commit or "")[:7], (gb.commit or "")[:7]),
        ("Git branch", ga.branch or "", gb.branch or ""),
        ("Uncommitted changes", _dirty(ga), _dirty(gb)),
    ]:
        if _differ(va, vb):
            experiment.append((name, va, vb))
    result.sections["Experiment"] = experiment
    result.sections["Params"] = _map_diff(ea.params, eb.params)
    result.sections["Python packages"] = _map_diff(ea.python_packages, eb.python_packages)

    ca, cb = left.checkpoint, right.checkpoint
    if ca is not None or cb is not None:
        fa, fb = _checkpoint_fields(ca), _checkpoint_fields(cb)
        result.sections["Checkpoint"] = [
            (name, fa[name], fb[name])
            for name in fa
            if name != "Path" or _differ(fa[name], fb[name])  # the rest always, as Keepsake
        ]
        result.sections["Metrics"] = _map_diff(
            ca.metrics if ca else None, cb.metrics if cb else None
        )
    result.code, result.code_note = _code(project, ga, gb, patch)
    return result


def _dirty(info: GitInfo) -> Any:
    return info.dirty if "dirty" in info.keys else NOT_SET


def _code(project: Workspace, ga: GitInfo, gb: GitInfo, patch: bool) -> tuple[str | None, str]:
    snapshot_a, snapshot_b = ga.snapshot, gb.snapshot
    if not (snapshot_a and snapshot_b):
        return None, "not compared: both need a git snapshot (recorded inside a git repository)"
    git = project.git
    if git is None:
        if not project.is_own_repository:
            return None, "not compared: git is left out for a repository other than the project's"
        return None, "not compared: not inside a git repository"
    missing = [s[:7] for s in (snapshot_a, snapshot_b) if not git.has_object(s)]
    if missing:
        return None, (
            f"not compared: snapshot {', '.join(missing)} is not in this repository "
            "(fetch it with: git keepsake pull)"
        )
    return git.diff_snapshots(snapshot_a, snapshot_b, patch), ""


def _status(experiment: ExperimentRecord) -> str:
    return "running" if experiment.is_running() else "stopped"


def _checkpoint_fields(checkpoint: CheckpointRecord | None) -> dict[str, Any]:
    if checkpoint is None:
        return dict.fromkeys(("ID", "Created", "Path", "Step"), NOT_SET)
    return {
        "ID": checkpoint.short_id(),
        "Created": checkpoint.created,
        "Path": checkpoint.path or "",
        "Step": checkpoint.step,
    }


def _differ(a: Any, b: Any) -> bool:
    return to_wire(a) != to_wire(b) if a is not NOT_SET and b is not NOT_SET else a is not b


def _map_diff(a: dict | None, b: dict | None) -> list[tuple[str, Any, Any]]:
    a, b = a or {}, b or {}
    out = []
    for name in sorted(a.keys() | b.keys()):
        va, vb = a.get(name, NOT_SET), b.get(name, NOT_SET)
        if _differ(va, vb):
            out.append((name, va, vb))
    return out
