"""Finishing the writes of runs that ended before their background writer did: a crash, a
SIGKILL, Ctrl-C at exit, or an outage longer than the writer waits (DESIGN.md invariant 1).

Every recording process stages into a session folder of its own and holds a lock on it while
it lives (writer.py). A session nobody holds is an orphan. Its staged tarballs are uploaded
first, then each journaled experiment's metadata is written with every checkpoint whose
`checkpoint()` call returned: to blob storage, then git, as the writer would have (invariant
2). Staged files that are gone are reported: the checkpoint keeps its metrics, not a path to
a tarball that was never written.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .repository import Repository
from .storage import open_storage
from .writer import (
    JOB_FILE,
    JOURNAL,
    LOCK_FILE,
    discard_session,
    lock_session,
    read_journal,
    upload_staged,
)

if TYPE_CHECKING:
    from .project import Project


@dataclass
class Recovered:
    """What recovery did for one experiment of an orphaned session."""

    experiment_id: str
    checkpoints: int = 0  # in its metadata now
    uploaded: list[str] = field(default_factory=list)  # "checkpoint abc1234", "experiment ..."
    lost: list[str] = field(default_factory=list)  # the same, whose staged files were gone

    def describe(self) -> str:
        text = f"experiment {self.experiment_id[:7]}: {self.checkpoints} checkpoint(s) recorded"
        if self.uploaded:
            text += f", uploaded {', '.join(self.uploaded)}"
        if self.lost:
            text += f"; LOST (staged files gone): {', '.join(self.lost)}"
        return text


def recover(project: Project) -> list[Recovered]:
    """Finish every orphaned session of the project. A storage error stops at the session it
    happened in, which stays for the next try."""
    root = project.state_dir / "staging"
    own = project.writer.session
    out: list[Recovered] = []
    for session in sorted(root.iterdir()) if root.is_dir() else ():
        if session == own or session.name.startswith("."):
            continue  # ours, or being discarded
        fd = lock_session(session)
        if fd is None:
            continue  # its process is alive (or it is just being made, or gone)
        try:
            out += _recover_session(project, session)
            discard_session(session)
        finally:
            os.close(fd)
    return out


def _recover_session(project: Project, session: Path) -> list[Recovered]:
    journaled = read_journal(session)
    repositories = _Repositories(project)
    uploaded: dict[str, str] = {}  # object id -> what, uploaded now
    lost: dict[str, str] = {}
    for staged in sorted(session.iterdir()):
        if staged.name in (LOCK_FILE, JOURNAL) or not staged.is_dir():
            continue
        if not (staged / JOB_FILE).is_file():  # killed while copying: the call never returned
            shutil.rmtree(staged, ignore_errors=True)
            continue
        job = json.loads((staged / JOB_FILE).read_text())
        what = f"{job['kind'][:-1]} {job['id'][:7]}"
        if not all((staged / "files" / rel).is_file() for rel in job["files"]):
            lost[job["id"]] = what
            continue
        head, _ = journaled.get(job["experiment_id"], (None, []))
        upload_staged(repositories.of(head), job["kind"], job["id"], staged, job["files"])
        uploaded[job["id"]] = what
    return [
        _write_experiment(project, repositories.of(head), head, checkpoints, uploaded, lost)
        for head, checkpoints in journaled.values()
    ]


class _Repositories:
    """The repository each experiment was recorded into, as its metadata says: a session
    recovered from the repository root (the pre-push hook) may belong to a project in a
    subfolder with a keepsake.yaml of its own."""

    def __init__(self, project: Project):
        self._project = project
        self._open: dict[str, Repository] = {}

    def of(self, head: dict | None) -> Repository:
        url = ((head or {}).get("config") or {}).get("repository")
        project = self._project
        if not url or url == project.repository.url:
            return project.repository
        if url not in self._open:
            self._open[url] = Repository(open_storage(url, project.directory))
        return self._open[url]


def _write_experiment(
    project: Project,
    repository: Repository,
    data: dict,
    checkpoints: list[dict],
    uploaded: dict[str, str],
    lost: dict[str, str],
) -> Recovered:
    from .experiment import Experiment

    for checkpoint in checkpoints:
        if checkpoint["id"] in lost:
            checkpoint["path"] = ""  # its metrics stay; nothing points at a missing tarball
    experiment = Experiment.from_json(project, {**data, "checkpoints": checkpoints or None})
    ids = {experiment.id, *(c["id"] for c in checkpoints)}
    text = experiment._stored_json()
    repository.write_experiment(experiment.id, text)
    git, info = project.git, data.get("git") or {}
    if git is not None and info.get("snapshot"):
        experiment._git = git
        experiment._git_metadata = git.metadata_ref(experiment.id)
        experiment._note_due = True
        experiment._record_in_git(text)
    repository.delete_heartbeat(experiment.id)  # it is not running
    return Recovered(
        experiment.id,
        checkpoints=len(checkpoints),
        uploaded=[what for i, what in uploaded.items() if i in ids],
        lost=[what for i, what in lost.items() if i in ids],
    )
