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

from .errors import KeepsakeError
from .tarball import iter_files

if TYPE_CHECKING:
    from .git.repo import GitRepo
    from .project import Project


def adopt(project: Project) -> list[str]:
    """IDs of the experiments brought into git; none outside git."""
    git = project.git
    if git is None:
        return []
    repository = project.repository
    in_git = git.metadata_refs()
    missing = [i for i in repository.experiment_ids() if i not in in_git]
    adopted = []
    for experiment_id in sorted(missing):
        _adopt_one(project, git, experiment_id)
        adopted.append(experiment_id)
    if adopted:
        project.catalog.rebuild_notes()
    return adopted


def _adopt_one(project: Project, git: GitRepo, experiment_id: str) -> None:
    from .experiment import Experiment

    repository = project.repository
    data = repository.read_experiment(experiment_id)
    experiment = Experiment.from_json(project, data)
    info = dict(data.get("git") or {})
    parent = info.get("commit")
    if parent and not git.has_object(parent):
        parent = None  # recorded in a clone whose commit never reached this one
    limit = project.git_max_file_size
    when = experiment.created.timestamp()
    with tempfile.TemporaryDirectory(prefix="git-keepsake-adopt-") as tmp:
        tarball = repository.local_tarball("experiments", experiment_id, tmp)

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
    experiment._extra["git"] = {**info, "commit": parent, "snapshot": snapshot, "imported": True}
    git.write_metadata(experiment_id, snapshot, experiment._stored_json().encode(), None, when)
