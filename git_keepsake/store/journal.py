"""Session folders: what a recording process staged, and its journal, until they are written.

Each process that records stages into a folder of its own under the project's staging root,
and holds an exclusive lock on it while it lives (the kernel lets go even on SIGKILL). A
folder nobody holds belongs to a run that ended before its writes did; `recovery` finishes
them. Layout of a session folder:

    lock                                   held by the process while it lives
    <object id>/files/<path>               a staged snapshot (experiment or checkpoint)
    <object id>/job.json                   written last: the staged copy is complete
    journal/<experiment id>/experiment.json        the experiment's metadata as of init()
    journal/<experiment id>/checkpoints.jsonl      a line per checkpoint() that returned
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import threading
from pathlib import Path

JOB_FILE = "job.json"
JOURNAL = "journal"
EXPERIMENT_ENTRY = "experiment.json"
CHECKPOINTS_ENTRY = "checkpoints.jsonl"
LOCK_FILE = "lock"


def lock_session(session: Path, create: bool = False) -> int | None:
    """An exclusive lock on the session's lock file, held until this process ends; None if
    another process holds it, or it is gone."""
    try:
        fd = os.open(session / LOCK_FILE, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def discard_session(session: Path) -> None:
    """Remove a session folder, which its lock holder may do: renamed away first, in one step,
    so that nobody who locks it later finds it half-deleted."""
    trash = session.with_name(f".discarded-{session.name}")
    try:
        os.replace(session, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def orphaned_sessions(staging_root: Path, own: Path | None):
    """(session folder, lock fd) for each session nobody holds, locked now; the caller closes
    the fd. Ours, and dot-folders (being made or discarded), are skipped."""
    for session in sorted(staging_root.iterdir()) if staging_root.is_dir() else ():
        if session == own or session.name.startswith("."):
            continue
        fd = lock_session(session)
        if fd is not None:  # else its process is alive (or it is just being made, or gone)
            yield session, fd


def journaled_by_live_runs(staging_root: Path, own: Path | None) -> dict[str, str]:
    """{experiment id: session name} of the experiments journaled by processes that are alive
    (they hold their session's lock): running here, whatever their heartbeat says."""
    out: dict[str, str] = {}
    for session in sorted(staging_root.iterdir()) if staging_root.is_dir() else ():
        if session == own or session.name.startswith("."):
            continue
        fd = lock_session(session)
        if fd is not None:  # an orphan, not a live run
            os.close(fd)
            continue
        with contextlib.suppress(OSError):
            out.update((e.name, session.name) for e in os.scandir(session / JOURNAL))
    return out


def read_journal(session: Path) -> dict[str, tuple[dict, list[dict]]]:
    """{experiment id: (its metadata as of init(), its checkpoints)}, as a session journaled
    them. Entries a kill cut short are skipped: those calls never returned."""
    out = {}
    journal = session / JOURNAL
    for folder in sorted(journal.iterdir()) if journal.is_dir() else ():
        try:
            head = json.loads((folder / EXPERIMENT_ENTRY).read_text())
        except (OSError, ValueError):
            continue
        checkpoints = []
        with contextlib.suppress(FileNotFoundError):
            for line in (folder / CHECKPOINTS_ENTRY).read_text().splitlines():
                with contextlib.suppress(ValueError):
                    checkpoints.append(json.loads(line))
        out[folder.name] = (head, checkpoints)
    return out


def staged_jobs(session: Path):
    """(staged folder, its job) for each complete staged snapshot of a session; folders a kill
    cut short (no job.json: the call never returned) are removed."""
    for staged in sorted(session.iterdir()):
        if staged.name in (LOCK_FILE, JOURNAL) or not staged.is_dir():
            continue
        if not (staged / JOB_FILE).is_file():
            shutil.rmtree(staged, ignore_errors=True)
            continue
        yield staged, json.loads((staged / JOB_FILE).read_text())


class Session:
    """This process's own session folder, made (and locked) on first use."""

    def __init__(self, staging_root: Path):
        self.staging_root = staging_root
        self.folder: Path | None = None
        self._lock_fd: int | None = None
        self._journal_fds: dict[str, int] = {}  # experiment id -> its checkpoints, for append
        self._making = threading.Lock()

    def _ensure(self) -> Path:
        if self.folder is None:
            with self._making:
                if self.folder is None:
                    name = f"{os.getpid()}-{os.urandom(4).hex()}"
                    # Made under a dot name (which recovery skips), locked, then renamed: no
                    # one ever sees it unlocked and takes it for an orphan.
                    making = self.staging_root / f".new-{name}"
                    making.mkdir(parents=True)
                    self._lock_fd = lock_session(making, create=True)
                    folder = self.staging_root / name
                    os.replace(making, folder)
                    self.folder = folder
        return self.folder

    def stage(self, object_id: str, project_dir: Path, files: list[str], job: dict) -> Path:
        """Copy files to a private staging folder now, so the script may overwrite them at once."""
        staged = self._ensure() / object_id
        root = staged / "files"
        root.mkdir(parents=True, exist_ok=True)  # even for no files: job.json goes beside it
        made = {root}
        for rel in files:
            target = root / rel
            if target.parent not in made:
                target.parent.mkdir(parents=True, exist_ok=True)
                made.add(target.parent)
            shutil.copyfile(project_dir / rel, target)
            if os.access(project_dir / rel, os.X_OK):
                os.chmod(target, 0o755)
        # Written last: its presence says the staged copy is complete (the journal entry).
        (staged / JOB_FILE).write_text(json.dumps({**job, "files": files}))
        return staged

    def journal_experiment(self, experiment_id: str, head: str) -> None:
        """The experiment's metadata without checkpoints, as of init()."""
        folder = self._ensure() / JOURNAL / experiment_id
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{EXPERIMENT_ENTRY}"
        tmp.write_text(head)
        os.replace(tmp, folder / EXPERIMENT_ENTRY)

    def journal_checkpoint(self, experiment_id: str, text: str) -> None:
        """One checkpoint's metadata, before checkpoint() returns: a line appended to the
        experiment's CHECKPOINTS_ENTRY (JSON has no raw newlines but between tokens). A kill
        mid-write leaves a last line that doesn't parse, which recovery skips."""
        fd = self._journal_fds.get(experiment_id)
        if fd is None:
            path = self._ensure() / JOURNAL / experiment_id / CHECKPOINTS_ENTRY
            fd = self._journal_fds[experiment_id] = os.open(
                path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
            )
        os.write(fd, (text.replace("\n", " ") + "\n").encode())

    def forget(self, experiment_id: str) -> None:
        """Everything about the experiment is written: its journal goes."""
        fd = self._journal_fds.pop(experiment_id, None)
        if fd is not None:
            os.close(fd)
        if self.folder is not None:
            shutil.rmtree(self.folder / JOURNAL / experiment_id, ignore_errors=True)

    def close(self) -> None:
        """At exit, with nothing pending: the folder goes if nothing is left in it for recovery."""
        folder = self.folder
        if folder is None:
            return
        journal = folder / JOURNAL
        try:
            left = [p for p in folder.iterdir() if p.name not in (LOCK_FILE, JOURNAL)]
            kept = journal.exists() and any(journal.iterdir())
        except FileNotFoundError:
            return  # removed already (by hand, or by a test's cleanup)
        if not left and not kept:
            discard_session(folder)


def forget_staged(
    staging_root: Path, own: Path | None, experiment_id: str, checkpoints: set[str] | None = None
) -> None:
    """Drop what runs that ended early left staged and journaled for an experiment that is
    being removed (all of it, or the checkpoints whose IDs are in `checkpoints`), so that
    recovery does not write it back. Sessions of live processes are not touched."""
    for session, fd in orphaned_sessions(staging_root, own):
        try:
            _forget_in(session, experiment_id, checkpoints)
        finally:
            os.close(fd)


def _forget_in(session: Path, experiment_id: str, checkpoints: set[str] | None) -> None:
    entry = session / JOURNAL / experiment_id
    if checkpoints is None:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(entry)
    else:
        with contextlib.suppress(FileNotFoundError):
            lines = (entry / CHECKPOINTS_ENTRY).read_text().splitlines(keepends=True)
            kept = [line for line in lines if _journaled_id(line) not in checkpoints]
            if kept != lines:
                tmp = entry / f".{CHECKPOINTS_ENTRY}"
                tmp.write_text("".join(kept))
                os.replace(tmp, entry / CHECKPOINTS_ENTRY)
    for staged in session.iterdir():
        if staged.name in (LOCK_FILE, JOURNAL) or not staged.is_dir():
            continue
        if checkpoints is None:
            mine = staged.name == experiment_id or _owner(staged) == experiment_id
        else:
            mine = staged.name in checkpoints
        if mine:
            shutil.rmtree(staged)


def _owner(staged: Path) -> str | None:
    """The experiment a staged snapshot belongs to, as its job says (None if unreadable)."""
    try:
        return json.loads((staged / JOB_FILE).read_text()).get("experiment_id")
    except (OSError, ValueError, AttributeError):
        return None


def _journaled_id(line: str) -> str | None:
    try:
        return json.loads(line).get("id")
    except (ValueError, AttributeError):
        return None
