"""Finishing the writes of runs that ended before their background writer did: a crash, a
SIGKILL, Ctrl-C at exit, or an outage longer than the writer waits (DESIGN.md invariant 1).

Every recording process stages into a session folder of its own and holds a lock on it while
it lives (writer.py). A session nobody holds is an orphan. Its staged tarballs are uploaded
first, then each journaled experiment's metadata is written with every checkpoint whose
`checkpoint()` call returned: to blob storage, then git, as the writer would have (invariant
2). Staged files that are gone are reported: the checkpoint keeps its metrics, not a path to
a tarball that was never written. Journal entries that can't be read are set aside (reported
in one line each), and the rest recovers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import KeepsakeError
from .records import ExperimentRecord, GitInfo
from .runtime import warn
from .storage import open_storage
from .store.journal import (
    JOURNAL,
    STAGING,
    discard_session,
    orphaned_sessions,
    read_journal,
    set_aside,
    staged_jobs,
)
from .store.layout import CHECKPOINTS, EXPERIMENTS, Repository
from .store.publish import Publication
from .store.writer import upload_staged
from .workspace import Workspace


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


def recover(workspace: Workspace) -> list[Recovered]:
    """Finish every orphaned session of the project. A storage error stops at the session it
    happened in, which stays for the next try."""
    out: list[Recovered] = []
    root = workspace.state_dir / STAGING
    for session, fd in orphaned_sessions(root, workspace.writer.session.folder):
        try:
            out += _recover_session(workspace, session)
            discard_session(session)
        finally:
            os.close(fd)
    return out


def _recover_session(workspace: Workspace, session: Path) -> list[Recovered]:
    journaled, unreadable = read_journal(session)
    jobs, more = staged_jobs(session)
    for line in unreadable + more:
        warn(f"recovery could not read {line}")
    repositories = _Repositories(workspace)
    uploaded: dict[str, str] = {}  # object id -> what, uploaded now
    lost: dict[str, str] = {}  # the same, whose tarball is nowhere
    for staged, job in jobs:
        what = f"{job['kind'][:-1]} {job['id'][:7]}"
        if not all((staged / "files" / rel).is_file() for rel in job["files"]):
            continue  # lost, unless its tarball was stored before they went (below)
        head, _ = journaled.get(job["experiment_id"], (None, []))
        upload_staged(repositories.of(head), job["kind"], job["id"], staged, job["files"])
        uploaded[job["id"]] = what
    out = []
    for experiment_id, (head, checkpoints) in journaled.items():
        try:
            ExperimentRecord.from_json(None, {**head, "checkpoints": None})  # it can be read
        except (KeepsakeError, ValueError, KeyError, TypeError, AttributeError) as e:
            where = set_aside(session, session / JOURNAL / experiment_id)
            warn(
                f"recovery could not read experiment {experiment_id[:7]} ({e}): "
                f"set aside in {where}"
            )
            continue
        repository = repositories.of(head)
        out.append(_write_experiment(workspace, repository, head, checkpoints, uploaded, lost))
    return out


class _Repositories:
    """The repository each experiment was recorded into, as its metadata says: a session
    recovered from the repository root (the pre-push hook) may belong to a project in a
    subfolder with a keepsake.yaml of its own."""

    def __init__(self, workspace: Workspace):
        self._workspace = workspace
        self._open: dict[str, Repository] = {}

    def of(self, head: dict | None) -> Repository:
        url = ((head or {}).get("config") or {}).get("repository")
        workspace = self._workspace
        if not url or url == workspace.repository.url:
            return workspace.repository
        if url not in self._open:
            self._open[url] = Repository(open_storage(url, workspace.directory))
        return self._open[url]


def _write_experiment(
    workspace: Workspace,
    repository: Repository,
    data: dict,
    checkpoints: list[dict],
    uploaded: dict[str, str],
    lost: dict[str, str],
) -> Recovered:
    # Its metrics stay; nothing points at a tarball that is not there (staged files gone or
    # set aside, a kill while they were staged), whether uploaded now or by the run itself.
    named = [(EXPERIMENTS, data), *((CHECKPOINTS, c) for c in checkpoints)]
    named = [(kind, e) for kind, e in named if e.get("path") and e["id"] not in uploaded]
    stored = repository.stored_tarballs([(kind, e["id"]) for kind, e in named])
    for kind, entry in named:
        if (kind, entry["id"]) not in stored:
            entry["path"] = ""
            lost[entry["id"]] = f"{kind[:-1]} {entry['id'][:7]}"
    experiment = ExperimentRecord.from_json(None, {**data, "checkpoints": checkpoints or None})
    git = workspace.git
    info: GitInfo | None = experiment.git
    in_git = git.metadata_ref(experiment.id) if git is not None and info is not None else None
    publication = Publication(repository, git, experiment.id, info, in_git)
    publication.publish(experiment, experiment.encode(), note=True)
    repository.delete_heartbeat(experiment.id)  # it is not running
    ids = {experiment.id, *(c["id"] for c in checkpoints)}
    return Recovered(
        experiment.id,
        checkpoints=len(checkpoints),
        uploaded=[what for i, what in uploaded.items() if i in ids],
        lost=[what for i, what in lost.items() if i in ids],
    )
