"""Deleting experiments and checkpoints: everything that records them, in git and in storage.

Pointers go before what they point at (refs and metadata, then tarballs), so an interrupted
removal leaves orphan blobs at worst, never metadata naming a missing tarball.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import InvalidArgument, KeepsakeError
from .repository import experiment_metadata_key, heartbeat_key, tarball_key

if TYPE_CHECKING:
    from .checkpoint import Checkpoint
    from .experiment import Experiment
    from .project import Project


@dataclass
class Removal:
    """An experiment to delete whole, or some of its checkpoints."""

    experiment: Experiment
    whole: bool = False
    checkpoints: list[Checkpoint] = field(default_factory=list)  # when not whole

    def describe(self) -> list[str]:
        """What will go, one line each, for the user to confirm."""
        e = self.experiment
        if self.whole:
            files = sum(1 for c in e.checkpoints if c.path)
            parts = [f"metadata and {e.checkpoint_count()} checkpoint(s)"]
            if files:
                parts.append(f"{files} checkpoint tarball(s)")
            if e.path:
                parts.append("its code tarball")
            if (e._extra.get("git") or {}).get("snapshot"):
                parts.append("its git refs and note")
            return [f"experiment {e.short_id()} ({_params(e)}): " + ", ".join(parts)]
        return [
            f"checkpoint {c.short_id()} (step {c.step}) of experiment {e.short_id()}"
            + (": its tarball and its entry in the metadata" if c.path else ": its metadata entry")
            for c in self.checkpoints
        ]


def plan_removal(project: Project, ids: list[str]) -> list[Removal]:
    """Resolve IDs (prefixes of experiments or checkpoints) into removals, one per experiment.
    Raises before anything is deleted if an ID is unknown or an experiment is running."""
    from .experiment import Experiment

    if not ids:
        raise InvalidArgument("no ID given", hint="e.g. git keepsake rm 3f8a508")
    by_experiment: dict[str, Removal] = {}
    for found in project.catalog.find_all(ids):
        experiment = found if isinstance(found, Experiment) else found.experiment
        removal = by_experiment.setdefault(experiment.id, Removal(experiment))
        if isinstance(found, Experiment):
            removal.whole, removal.checkpoints = True, []
        elif not removal.whole and found not in removal.checkpoints:
            removal.checkpoints.append(found)
    for removal in by_experiment.values():
        if removal.experiment.is_running():
            raise InvalidArgument(
                f"experiment {removal.experiment.short_id()} is running: its next write would "
                "bring back what is removed",
                hint="stop the run first (or wait 30 s if it was killed)",
            )
    return list(by_experiment.values())


def apply_removal(project: Project, removal: Removal) -> None:
    if removal.whole:
        _remove_experiment(project, removal.experiment)
    else:
        _remove_checkpoints(project, removal.experiment, removal.checkpoints)


def _remove_experiment(project: Project, experiment: Experiment) -> None:
    storage = project.repository.storage
    git = project.git
    info = experiment._extra.get("git") or {}
    if git is not None:
        git.delete_experiment_refs(experiment.id)
        if info.get("commit"):
            git.remove_note_line(info["commit"], experiment.id)
    # The metadata first, so no reader sees the experiment with its tarballs half gone.
    _delete(storage, [experiment_metadata_key(experiment.id)])
    keys = [heartbeat_key(experiment.id), tarball_key("experiments", experiment.id)]
    keys += [tarball_key("checkpoints", c.id) for c in experiment.checkpoints if c.path]
    _delete(storage, keys)


def _remove_checkpoints(
    project: Project, experiment: Experiment, checkpoints: list[Checkpoint]
) -> None:
    """Rewrite the experiment's metadata without them (storage and git), then their tarballs."""
    gone = {c.id for c in checkpoints}
    experiment.checkpoints = [c for c in experiment.checkpoints if c.id not in gone]
    text = experiment._stored_json()
    git, info = project.git, experiment._extra.get("git") or {}
    in_git = git.metadata_ref(experiment.id) if git is not None else None
    if in_git is not None and info.get("snapshot"):
        git.write_metadata(experiment.id, info["snapshot"], text.encode(), in_git, time.time())
        if info.get("commit"):
            git.update_note(info["commit"], experiment.id, experiment._note_line())
    storage = project.repository.storage
    key = experiment_metadata_key(experiment.id)
    if storage.exists(key):
        project.repository.write_experiment(experiment.id, text)
    _delete(storage, [tarball_key("checkpoints", c.id) for c in checkpoints if c.path])


def _delete(storage, keys: list[str]) -> None:
    """Concurrently where the storage gains from it (a bucket); a missing key is fine."""
    try:
        storage.delete_many(keys)
    except OSError as e:
        raise KeepsakeError(f"could not delete from {storage.url}: {e}") from e


def _params(experiment: Experiment) -> str:
    params = experiment.params or {}
    text = ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
    return (text if len(text) <= 50 else text[:47] + "...") or "no params"
