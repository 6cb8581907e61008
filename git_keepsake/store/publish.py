"""Publishing an experiment's metadata, always in one order: the blob-storage JSON, then the same
bytes as a metadata commit in git, then the note on the commit it ran from (DESIGN invariant 2:
git never names a tarball that storage lacks). The writer, recovery, `sync` and `rm` all publish
through here; `Recording` is what the writer keeps of an experiment this process records.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from .. import metadata
from ..errors import KeepsakeError
from ..records import CheckpointRecord, ExperimentRecord, GitInfo
from ..runtime import warn, warn_or_raise
from .layout import Repository

if TYPE_CHECKING:
    from ..git.repo import GitRepo

# Experiment refs are packed once this many are loose: listing 10,000 loose refs is 5-20x slower.
LOOSE_REFS_TO_PACK = 512


def note_line(experiment: ExperimentRecord) -> str:
    """The experiment's line in the note on its commit (id, params, best metric)."""
    from ..git.notes import format_note_line

    return format_note_line(experiment.id, experiment.params, experiment.best_summary())


class Publication:
    """Where one experiment's metadata goes: a repository, and git if it has a snapshot there.

    `metadata_commit` is the metadata commit last written (None: not in git yet); each update
    is a compare-and-swap from it, so a ref deleted meanwhile (`git keepsake rm`) is not
    brought back. With `training`, git failures warn (strict mode raises) and the storage copy
    stands; otherwise they raise.
    """

    def __init__(
        self,
        repository: Repository | None,
        git: GitRepo | None,
        experiment_id: str,
        info: GitInfo | None,
        metadata_commit: str | None = None,
        training: bool = True,
    ):
        self.repository = repository
        self.git = git if info is not None and info.snapshot else None
        self.experiment_id = experiment_id
        self.info = info
        self.metadata_commit = metadata_commit
        self.training = training

    def publish(
        self, experiment: ExperimentRecord, text: str, note: bool = False, when: float | None = None
    ) -> None:
        """Write `text` (the experiment's metadata file) to storage, then git (a commit dated
        `when`, default now); with `note`, refresh the experiment's line in the note on its
        commit."""
        if self.repository is not None:
            self.repository.ensure_created()
            self.repository.write_experiment(self.experiment_id, text)
        if self.git is not None:
            self._publish_in_git(experiment, text, note, time.time() if when is None else when)

    def _publish_in_git(
        self, experiment: ExperimentRecord, text: str, note: bool, when: float
    ) -> None:
        from ..git.repo import RefMoved

        git, info = self.git, self.info
        assert git is not None and info is not None and info.snapshot
        try:
            first = self.metadata_commit is None
            self.metadata_commit = git.write_metadata(
                self.experiment_id, info.snapshot, text.encode(), self.metadata_commit, when
            )
            if first and git.loose_ref_count() > LOOSE_REFS_TO_PACK:
                git.pack_refs()
            if note and info.commit:
                git.update_note(info.commit, self.experiment_id, note_line(experiment))
        except RefMoved as e:
            if not self.training:
                raise
            self.git = None  # deleted (git keepsake rm): do not bring it back
            warn(f"experiment {experiment.short_id()} is no longer recorded in git: {e.message}")
        except KeepsakeError as e:
            if not self.training:
                raise
            e.message = f"could not record experiment {experiment.short_id()} in git: {e.message}"
            warn_or_raise(e)


def rebuild_notes(git: GitRepo, experiments: list[ExperimentRecord], in_git: set[str]) -> int:
    """Rewrite refs/notes/keepsake from the experiments in git (the notes are only a view of
    them: this is how a notes conflict is resolved). Returns the number of notes written."""
    lines: dict[str, list[str]] = {}
    for experiment in sorted(experiments, key=lambda e: e.created):
        commit = experiment.git.commit if experiment.git else None
        if commit and experiment.id in in_git:
            lines.setdefault(commit, []).append(note_line(experiment))
    git.rebuild_notes(lines)
    return len(lines)


class Recording:
    """An experiment this process records: its metadata as far as its files are stored,
    encoded incrementally, where it is published, and its last step (a checkpoint() without
    one takes the next)."""

    def __init__(self, experiment: ExperimentRecord, publication: Publication):
        self.experiment = experiment
        self.publication = publication
        self.id = experiment.id
        steps = (c.step for c in experiment.checkpoints if c.step is not None)
        self.last_step = max(steps, default=-1)
        self.note_due = publication.git is not None  # the note on HEAD, with the next write
        self._pending: set[str] = set()  # checkpoints whose tarball is not stored yet
        self._encoded: dict[str, str] = {}  # checkpoint id -> its JSON text, encoded once
        self._lock = threading.Lock()

    def add(self, checkpoint: CheckpointRecord, text: str, files_pending: bool) -> None:
        """A new checkpoint, already encoded (`text`); `files_pending` until its tarball is
        stored, the metadata does not name it."""
        with self._lock:
            self._encoded[checkpoint.id] = text
            if files_pending:
                self._pending.add(checkpoint.id)

    def stored(self, checkpoint_id: str) -> None:
        with self._lock:
            self._pending.discard(checkpoint_id)

    def is_pending(self, checkpoint_id: str) -> bool:
        with self._lock:
            return checkpoint_id in self._pending

    def stored_json(self) -> str:
        """The metadata file, naming only checkpoints whose files are already in the repository."""
        experiment = self.experiment
        with experiment.lock, self._lock:
            checkpoints = [c for c in experiment.checkpoints if c.id not in self._pending]
        texts = []
        for chk in checkpoints:
            text = self._encoded.get(chk.id)
            if text is None:
                text = self._encoded[chk.id] = metadata.encode_checkpoint(chk.to_json())
            texts.append(text)
        return metadata.encode_experiment(experiment.head_json(), texts)

    def publish(self) -> None:
        note, self.note_due = self.note_due, False
        try:
            self.publication.publish(self.experiment, self.stored_json(), note=note)
        except BaseException:
            self.note_due = self.note_due or note  # retried with the next write
            raise
