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

Every file is synced to disk before the call that wrote it returns, and job.json and
experiment.json are written whole or not at all (a temporary name, then a rename), so neither a
kill nor a power loss leaves one torn. Entries recovery still can't read (from an older
version, or damaged by hand) are moved to `.set-aside/` under the staging root, for a human.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import threading
from collections.abc import Container
from pathlib import Path, PurePosixPath

from ..metadata import is_id

STAGING = "staging"  # the staging root, in the project's state dir
JOB_FILE = "job.json"
JOURNAL = "journal"
EXPERIMENT_ENTRY = "experiment.json"
CHECKPOINTS_ENTRY = "checkpoints.jsonl"
LOCK_FILE = "lock"
SET_ASIDE = ".set-aside"
KINDS = ("experiments", "checkpoints")  # layout.EXPERIMENTS, layout.CHECKPOINTS


def write_durably(path: Path, data: bytes) -> None:
    """`path` holds `data` whole, even after a power loss: written to a temporary name,
    synced, renamed over, and the rename synced."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    """Make the names in a folder (files made or renamed there) durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


def set_aside(session: Path, entry: Path) -> Path:
    """Move an entry of a session that recovery can't read to the staging root's SET_ASIDE
    folder (where recovery never looks), keeping it for a human; returns where it went."""
    target = session.parent / SET_ASIDE / session.name / entry.relative_to(session)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(entry, target)
    return target


def read_journal(
    session: Path, repair: bool = True, skip: Container[str] = ()
) -> tuple[dict[str, tuple[dict, list[dict]]], list[str]]:
    """({experiment id: (its metadata as of init(), its checkpoints)} as a session journaled
    them, but those in `skip`; [what was set aside]). A checkpoint line a kill cut short is
    skipped (that call never returned); an experiment entry that is not its metadata is set
    aside (with `repair`: its lock holder only), else skipped."""
    out = {}
    unreadable = []
    journal = session / JOURNAL
    for folder in sorted(journal.iterdir()) if journal.is_dir() else ():
        if folder.name.startswith(".") or folder.name in skip:
            continue
        try:
            head = json.loads((folder / EXPERIMENT_ENTRY).read_bytes())
        except FileNotFoundError:
            head = None  # a kill before it was renamed in: init() never returned
        except (OSError, ValueError) as e:
            head = e
        if not isinstance(head, dict) or head.get("id") != folder.name or not is_id(folder.name):
            if repair and (head is not None or (folder / CHECKPOINTS_ENTRY).exists()):
                reason = f"({head})" if isinstance(head, Exception) else "(not its metadata)"
                where = set_aside(session, folder)
                unreadable.append(f"experiment {folder.name[:7]} {reason}: set aside in {where}")
            continue
        checkpoints = []
        with contextlib.suppress(FileNotFoundError):
            for line in (folder / CHECKPOINTS_ENTRY).read_bytes().splitlines():
                with contextlib.suppress(ValueError):
                    checkpoint = json.loads(line)
                    if isinstance(checkpoint, dict) and is_id(checkpoint.get("id")):
                        checkpoints.append(checkpoint)
        out[folder.name] = (head, checkpoints)
    return out, unreadable


def journaled_experiments(staging_root: Path, skip: Container[str] = ()) -> dict[str, dict]:
    """{experiment id: its metadata, checkpoints included} of every experiment journaled
    under the staging root (but those in `skip`), by runs alive or not; read only (nothing
    is locked or repaired)."""
    out = {}
    for session in sorted(staging_root.iterdir()) if staging_root.is_dir() else ():
        if session.name.startswith("."):
            continue
        try:
            entries, _ = read_journal(session, repair=False, skip=skip)
        except OSError:
            continue  # discarded meanwhile
        for experiment_id, (head, checkpoints) in entries.items():
            out[experiment_id] = {**head, "checkpoints": checkpoints or None}
    return out


def staged_jobs(session: Path) -> tuple[list[tuple[Path, dict]], list[str]]:
    """([(staged folder, its job)] for each complete staged snapshot of a session, [what was
    set aside]). Folders with no job.json (the call never returned) are removed; one whose
    job.json can't be read is set aside."""
    jobs, unreadable = [], []
    for staged in sorted(session.iterdir()):
        if (
            staged.name in (LOCK_FILE, JOURNAL)
            or staged.name.startswith(".")
            or not staged.is_dir()
        ):
            continue
        try:
            job = json.loads((staged / JOB_FILE).read_bytes())
        except FileNotFoundError:
            shutil.rmtree(staged, ignore_errors=True)
            continue
        except (OSError, ValueError) as e:
            job = e
        if not _is_job(job, staged.name):
            reason = f"({job})" if isinstance(job, Exception) else "(not a staging job)"
            where = set_aside(session, staged)
            unreadable.append(f"staged files of {staged.name[:7]} {reason}: set aside in {where}")
            continue
        jobs.append((staged, job))
    return jobs, unreadable


def _is_job(job, name: str) -> bool:
    return (
        isinstance(job, dict)
        and job.get("kind") in KINDS
        and job.get("id") == name
        and is_id(name)
        and is_id(job.get("experiment_id"))
        and isinstance(job.get("files"), list)
        and all(_is_relative(f) for f in job["files"])
    )


def _is_relative(path) -> bool:
    """A plain relative path (no "..", not absolute): what stage() writes, nothing else."""
    if not isinstance(path, str) or not path:
        return False
    parts = PurePosixPath(path).parts
    return not PurePosixPath(path).is_absolute() and ".." not in parts


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

    def stage(
        self, object_id: str, project_dir: Path, files: list[str], job: dict
    ) -> tuple[Path, list[str]]:
        """Copy files to a private staging folder now, so the script may overwrite them at
        once; returns the folder and the files copied. A file that vanishes meanwhile (another
        process's temporary file) is left out, as the git snapshot leaves it out; any other
        failure (a full disk) removes the partial copy, so it takes no room, and raises."""
        staged = self._ensure() / object_id
        try:
            copied = self._copy(staged / "files", project_dir, files)
            # Written last: its presence says the staged copy is complete (the journal entry).
            write_durably(staged / JOB_FILE, json.dumps({**job, "files": copied}).encode())
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        return staged, copied

    @staticmethod
    def _copy(root: Path, project_dir: Path, files: list[str]) -> list[str]:
        root.mkdir(parents=True, exist_ok=True)  # even for no files: job.json goes beside it
        made = {root}
        copied = []
        for rel in files:
            source, target = project_dir / rel, root / rel
            if target.parent not in made:
                target.parent.mkdir(parents=True, exist_ok=True)
                made.add(target.parent)
            try:
                shutil.copyfile(source, target)
                executable = os.access(source, os.X_OK)
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                if not target.parent.is_dir():
                    raise  # the staging folder went: the failure is staging's
                # The file vanished while it was copied, and may be back already (a temporary
                # file another process churns): left out, as the git snapshot leaves it out.
                continue
            with open(target, "rb+") as f:  # on disk before job.json says it is whole
                os.fsync(f.fileno())
            if executable:
                os.chmod(target, 0o755)
            copied.append(rel)
        for folder in made:
            sync_folder(folder)
        return copied

    def journal_experiment(self, experiment_id: str, head: str) -> None:
        """The experiment's metadata without checkpoints, as of init()."""
        folder = self._ensure() / JOURNAL / experiment_id
        folder.mkdir(parents=True, exist_ok=True)
        write_durably(folder / EXPERIMENT_ENTRY, head.encode())
        sync_folder(folder.parent)

    def journal_checkpoint(self, experiment_id: str, text: str) -> None:
        """One checkpoint's metadata, before checkpoint() returns: a line appended to the
        experiment's CHECKPOINTS_ENTRY (JSON has no raw newlines but between tokens). A kill
        mid-write leaves a last line that doesn't parse, which recovery skips. Synced before
        this returns: the call returned, so the checkpoint must outlive a power loss."""
        fd = self._journal_fds.get(experiment_id)
        if fd is None:
            path = self._ensure() / JOURNAL / experiment_id / CHECKPOINTS_ENTRY
            fd = self._journal_fds[experiment_id] = os.open(
                path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
            )
            sync_folder(path.parent)
        os.write(fd, (text.replace("\n", " ") + "\n").encode())
        os.fdatasync(fd)

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
