"""Deleting experiments and checkpoints: everything that records them, in git and in storage.

Pointers go before what they point at (refs and metadata, then tarballs), so an interrupted
removal leaves orphan blobs at worst, never metadata naming a missing tarball. Before them go
what would write the pointers back: a tombstone, so that a pull does not bring the refs back
from a remote (tombstones.py), and what a run that ended early left staged, so that recovery
does not write its metadata again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import GitError, InvalidArgument, KeepsakeError
from .records import CheckpointRecord, ExperimentRecord
from .store.journal import forget_staged, journaled_by_live_runs
from .store.layout import CHECKPOINTS
from .store.publish import Publication
from .workspace import Workspace


@dataclass
class Removal:
    """An experiment to delete whole, or some of its checkpoints."""

    experiment: ExperimentRecord
    whole: bool = False
    checkpoints: list[CheckpointRecord] = field(default_factory=list)  # when not whole
    # {checkpoint id: other experiments listing it}: its tarball stays (see Catalog.claimants)
    shared: dict[str, set[str]] = field(default_factory=dict)

    def tarballs(self) -> list[tuple[str, str]]:
        """The checkpoint tarballs to delete: those of its checkpoints no other record claims."""
        going = self.experiment.checkpoints if self.whole else self.checkpoints
        return [(CHECKPOINTS, c.id) for c in going if c.path and c.id not in self.shared]

    def describe(self) -> list[str]:
        """What will go, one line each, for the user to confirm."""
        return self._going() + [
            f"checkpoint {c[:7]}'s tarball stays: experiment(s) "
            f"{', '.join(i[:7] for i in sorted(others))} list it too"
            for c, others in sorted(self.shared.items())
        ]

    def _going(self) -> list[str]:
        e = self.experiment
        if self.whole:
            files = sum(1 for c in e.checkpoints if c.path)
            parts = [f"metadata and {e.checkpoint_count()} checkpoint(s)"]
            if files:
                parts.append(f"{files} checkpoint tarball(s)")
            if e.path:
                parts.append("its code tarball")
            if e.git is not None and e.git.snapshot:
                parts.append("its git refs and note")
            return [f"experiment {e.short_id()} ({_params(e)}): " + ", ".join(parts)]
        return [
            f"checkpoint {c.short_id()} (step {c.step}) of experiment {e.short_id()}"
            + (": its files (its metrics stay)" if c.path else ": nothing (it has no files)")
            for c in self.checkpoints
        ]


def plan_removal(project: Workspace, ids: list[str]) -> list[Removal]:
    """Resolve IDs (prefixes of experiments or checkpoints) into removals, one per experiment.
    Raises before anything is deleted if an ID is unknown or an experiment is running."""
    if not ids:
        raise InvalidArgument("no ID given", hint="e.g. git keepsake rm 3f8a508")
    by_experiment: dict[str, Removal] = {}
    for found in project.catalog.find_all(ids):
        experiment = found if isinstance(found, ExperimentRecord) else found.experiment
        removal = by_experiment.setdefault(experiment.id, Removal(experiment))
        if isinstance(found, ExperimentRecord):
            removal.whole, removal.checkpoints = True, []
        elif not removal.whole and found not in removal.checkpoints:
            removal.checkpoints.append(found)
    # A run here is known alive by its session's lock, even with no heartbeat (disabled, or
    # not written while storage is down).
    live = journaled_by_live_runs(project.state_dir / "staging", project.writer.session.folder)
    for removal in by_experiment.values():
        experiment = removal.experiment
        if experiment.id in live:
            process = live[experiment.id].partition("-")[0]  # session folders start with the pid
            raise InvalidArgument(
                f"experiment {experiment.short_id()} is running here (process {process}): its "
                "next write would bring back what is removed",
                hint="stop the run first",
            )
        if experiment.is_running():
            raise InvalidArgument(
                f"experiment {experiment.short_id()} is running: its next write would "
                "bring back what is removed",
                hint="stop the run first (or wait 30 s if it was killed)",
            )
    removals = list(by_experiment.values())
    going = [
        c.id for r in removals for c in (r.experiment.checkpoints if r.whole else r.checkpoints)
    ]
    for checkpoint_id, claimants in project.catalog.claimants(going).items():
        for removal in removals:
            others = claimants - {removal.experiment.id}
            if others and any(c.id == checkpoint_id for c in removal.experiment.checkpoints):
                removal.shared[checkpoint_id] = others
    return removals


def apply_removal(project: Workspace, removal: Removal) -> None:
    if removal.whole:
        _remove_experiment(project, removal.experiment, removal.tarballs())
    else:
        _remove_checkpoints(project, removal.experiment, removal.checkpoints, removal.tarballs())


def _remove_experiment(
    project: Workspace, experiment: ExperimentRecord, files: list[tuple[str, str]]
) -> None:
    _local(project, lambda: project.tombstones.add(experiment.id))
    _forget_staged(project, experiment.id)
    git, info = project.git, experiment.git
    if git is not None:
        _delete_refs(git, experiment)
        if info is not None and info.commit:
            git.remove_note_line(info.commit, experiment.id)
    _storage(project, lambda: project.repository.delete_experiment(experiment.id, files))


def _remove_checkpoints(
    project: Workspace,
    experiment: ExperimentRecord,
    checkpoints: list[CheckpointRecord],
    files: list[tuple[str, str]],
) -> None:
    """Publish the experiment's metadata with them marked files_removed (storage and git), then
    delete their tarballs. Their metrics and step stay, as Keepsake 0.4.2's delete left its
    metadata alone: the metric curve stays whole. Marking first means a killed rm leaves at
    worst an orphan tarball, never metadata claiming files that are gone."""
    gone = {c.id for c in checkpoints}
    _forget_staged(project, experiment.id, gone)
    for c in experiment.checkpoints:
        if c.id in gone and c.path:
            c.mark_files_removed()
    repository, git = project.repository, project.git
    in_git = git.metadata_ref(experiment.id) if git is not None else None
    publication = Publication(
        repository if repository.has_experiment(experiment.id) else None,
        git if in_git is not None else None,
        experiment.id,
        experiment.git,
        in_git,
        training=False,
    )
    _storage(project, lambda: publication.publish(experiment, experiment.encode(), note=True))
    _storage(project, lambda: repository.delete_tarballs(files))


def _delete_refs(git, experiment: ExperimentRecord) -> None:
    try:
        git.delete_experiment_refs(experiment.id)
    except GitError as e:
        hint = e.hint
        if ".lock" in e.message:  # held by a git process, or left by a killed one
            hint = "if no git process is running, remove that .lock file, then run rm again"
        raise GitError(
            f"could not delete the git refs of experiment {experiment.short_id()}: {e.message}",
            hint=hint,
        ) from e


def _forget_staged(
    project: Workspace, experiment_id: str, checkpoints: set[str] | None = None
) -> None:
    root = project.state_dir / "staging"
    own = project.writer.session.folder
    _local(project, lambda: forget_staged(root, own, experiment_id, checkpoints))


def _local(project: Workspace, action) -> None:
    try:
        action()
    except OSError as e:
        raise KeepsakeError(
            f"could not record the removal in {project.state_dir}: {e}",
            hint="nothing was deleted from git or storage; fix that folder, then run rm again",
        ) from e


def _storage(project: Workspace, action) -> None:
    try:
        action()
    except OSError as e:
        raise KeepsakeError(f"could not delete from {project.repository.url}: {e}") from e


def _params(experiment: ExperimentRecord) -> str:
    params = experiment.params or {}
    text = ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
    return (text if len(text) <= 50 else text[:47] + "...") or "no params"
