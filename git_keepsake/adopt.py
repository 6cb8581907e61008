"""Bringing into git the experiments that are in blob storage alone: recorded on a machine
without this repository, outside git, or by Keepsake 0.4.2. `git keepsake sync` does it.

Each gets what init() would have made: a snapshot commit (from `experiments/<id>.tar.gz`,
with the commit the run started from as parent when this repository has it) and a metadata
ref. The blob-storage JSON is left as it is (Keepsake's own files are not rewritten); the
copy in git adds a `git` field naming the snapshot, so `diff` can compare the code and
`checkout` can take it from git.
"""

from __future__ import annotations

import tempfile
from typing import TYPE_CHECKING

from .errors import CorruptRepository, KeepsakeError
from .records import ExperimentRecord, GitInfo
from .sharing import notes_from_refs
from .store.layout import EXPERIMENTS
from .store.publish import Publication
from .tarball import iter_files
from .workspace import Workspace

if TYPE_CHECKING:
    from .git.repo import GitRepo


def adopt(project: Workspace) -> tuple[list[str], list[str], list[str]]:
    """(IDs of the experiments brought into git, why each unreadable one was skipped, IDs
    left out because they were being removed here); none outside git. One corrupt metadata
    file in storage does not stop the others. A removed experiment (a tombstone) still in
    storage is an `rm` killed before it deleted the storage copy: not brought back."""
    git = project.git
    if git is None:
        return [], [], []
    repository = project.repository
    in_git = git.metadata_refs()
    removed = project.tombstones.ids()
    missing = [i for i in repository.experiment_ids() if i not in in_git]
    removing = sorted(removed.intersection(missing))
    missing = [i for i in missing if i not in removed]
    adopted, unreadable = [], []
    for experiment_id in sorted(missing):
        try:
            _adopt_one(project, git, experiment_id)
        except (CorruptRepository, ValueError, TypeError, KeyError) as e:
            unreadable.append(f"experiment {experiment_id[:7]}: {e}")
            continue
        adopted.append(experiment_id)
    if adopted:
        notes_from_refs(project, git)
    return adopted, unreadable, removing


def _adopt_one(project: Workspace, git: GitRepo, experiment_id: str) -> None:
    repository = project.repository
    experiment = ExperimentRecord.from_json(None, repository.read_experiment(experiment_id))
    info = experiment.git or GitInfo(keys=())
    parent = info.commit
    if parent and not git.has_object(parent):
        parent = None  # recorded in a clone whose commit never reached this one
    limit = project.git_max_file_size
    when = experiment.created.timestamp()
    with tempfile.TemporaryDirectory(prefix="git-keepsake-adopt-") as tmp:
        tarball = repository.local_tarball(EXPERIMENTS, experiment_id, tmp)

        def files():
            if tarball is None:
                return
            for rel, member, reader in iter_files(tarball):
                if member.isreg() and member.size <= limit:  # as init() leaves big files out
                    yield rel, reader.read(), bool(member.mode & 0o111)

        try:
            snapshot = git.import_snapshot(
                experiment_id,
                files(),
                parent,
                f"keepsake: experiment {experiment_id[:7]} (imported from {repository.url})\n",
                when,
            )
        except KeepsakeError as e:
            e.message = f"experiment {experiment_id[:7]}: {e.message}"
            raise
    # "imported": the snapshot was made from the tarball, not from a work tree at init().
    experiment.git = info.replace(commit=parent, snapshot=snapshot, imported=True)
    # Into git only: Keepsake's own files in storage are not rewritten.
    publication = Publication(None, git, experiment_id, experiment.git, training=False)
    publication.publish(experiment, experiment.encode(), when=when)
