"""The background writer: turns staged snapshots into tarballs and metadata in the repository.

`checkpoint()` only copies files into a staging folder on local disk and queues a job; this thread
does the slow part. Jobs run in order, so a metadata file is written after the tarballs it names
(readers never see a checkpoint whose files are missing). Metadata writes of one experiment are
coalesced and throttled: a run logging 10,000 checkpoints does not rewrite an ever-growing JSON
file 10,000 times, yet `flush()`/`stop()`/exit always leave it complete.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import shutil
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import AccessDenied, BucketNotFound, KeepsakeError, StorageError, StorageUnavailable
from .repository import Repository, tarball_key
from .tarball import write_tarball

if TYPE_CHECKING:
    from .experiment import Experiment

# Metadata writes may take at most this share of the writer's time while checkpoints stream in.
METADATA_TIME_SHARE = 0.1
RETRY_DELAYS = (0.5, 2.0, 5.0)
# While storage is unreachable (network, outage, throttling) writes wait and retry, training goes
# on, and checkpoints pile up staged on local disk. Past this long the write is given up on
# (its files stay staged).
OUTAGE_RETRY_SECONDS = 30 * 60
OUTAGE_MAX_DELAY = 10.0
SLOW_FLUSH_NOTICE_SECONDS = 1.0
JOB_FILE = "job.json"
JOURNAL = "journal"  # in a session folder: <experiment id>/experiment.json and checkpoints
EXPERIMENT_ENTRY = "experiment.json"
CHECKPOINTS_ENTRY = "checkpoints.jsonl"
LOCK_FILE = "lock"


def lock_session(session: Path, create: bool = False) -> int | None:
    """An exclusive lock on the session's lock file, held until this process ends (the kernel
    lets go even on SIGKILL); None if another process holds it, or it is gone."""
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


def upload_staged(
    repository: Repository, kind: str, object_id: str, staged: Path, files: list[str]
) -> None:
    """Tar a staged folder straight into the upload (no tarball on local disk, and tarring
    overlaps sending; a retry tars again), then remove the folder."""
    repository.ensure_created()
    paths = [(rel, staged / "files" / rel) for rel in files]
    repository.storage.put_stream(
        tarball_key(kind, object_id),
        lambda out: write_tarball(out, object_id, paths),
        size_hint=sum(path.stat().st_size for _, path in paths),
    )
    shutil.rmtree(staged, ignore_errors=True)


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


def strict() -> bool:
    """GIT_KEEPSAKE_STRICT=1 turns storage warnings into exceptions (the test suite sets it)."""
    return os.environ.get("GIT_KEEPSAKE_STRICT", "") not in ("", "0")


def warn(message: str) -> None:
    print(f"git-keepsake: warning: {message}", file=sys.stderr, flush=True)


@dataclass
class TarballJob:
    kind: str  # "experiments" or "checkpoints"
    object_id: str
    staged: Path  # staging folder: files/<relpath> and job.json
    files: list[str]
    on_stored: object = None  # callable run once the tarball is safely in the repository


@dataclass
class MetadataJob:
    experiment: Experiment


@dataclass
class RecoveryJob:
    """Finish the writes of earlier runs of the project that ended first (recovery.py)."""

    run: Callable[[], None]


@dataclass
class _Pending:
    jobs: deque = field(default_factory=deque)
    metadata_queued: dict = field(default_factory=dict)  # experiment id -> count of queued jobs
    deferred: dict = field(default_factory=dict)  # experiment id -> (experiment, due time)


class Writer:
    """One background thread per project that writes everything to its repository, in order."""

    def __init__(self, repository: Repository, staging_root: Path):
        self.repository = repository
        self.staging_root = staging_root
        self._session: Path | None = None
        self._session_lock: int | None = None
        self._journal_fds: dict[str, int] = {}  # experiment id -> its checkpoints, for append
        self._cond = threading.Condition()
        self._pending = _Pending()
        self._busy = False
        self._flushers = 0
        self._errors: list[KeepsakeError] = []
        self._last_warning = ""
        self.failed = False  # some write gave up: the journal stays for recovery
        self._metadata_cost: dict[str, float] = {}
        self._thread: threading.Thread | None = None
        _live_writers.add(self)

    # --- the journal: what this process staged, until it is written ---

    @property
    def session(self) -> Path | None:
        """This process's staging folder, if it has made one yet."""
        return self._session

    @property
    def staging_dir(self) -> Path:
        """This process's own folder under staging_root, locked while the process lives: a
        folder nobody holds the lock of belongs to a run that ended before its writes did, and
        `recovery` finishes them."""
        if self._session is None:
            with self._cond:
                if self._session is None:
                    name = f"{os.getpid()}-{os.urandom(4).hex()}"
                    # Made under a dot name (which recovery skips), locked, then renamed: no
                    # one ever sees it unlocked and takes it for an orphan.
                    making = self.staging_root / f".new-{name}"
                    making.mkdir(parents=True)
                    self._session_lock = lock_session(making, create=True)
                    session = self.staging_root / name
                    os.replace(making, session)
                    self._session = session
        return self._session

    def journal_experiment(self, experiment_id: str, head: str) -> None:
        """The experiment's metadata without checkpoints, as of init()."""
        folder = self.staging_dir / JOURNAL / experiment_id
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
            path = self.staging_dir / JOURNAL / experiment_id / CHECKPOINTS_ENTRY
            fd = self._journal_fds[experiment_id] = os.open(
                path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
            )
        os.write(fd, (text.replace("\n", " ") + "\n").encode())

    def forget(self, experiment_id: str) -> None:
        """Everything about the experiment is written: its journal goes."""
        fd = self._journal_fds.pop(experiment_id, None)
        if fd is not None:
            os.close(fd)
        if self._session is not None:
            shutil.rmtree(self._session / JOURNAL / experiment_id, ignore_errors=True)

    def close_session(self) -> None:
        """At exit: the folder goes if nothing is left in it for recovery."""
        session = self._session
        if session is None or self.pending():
            return
        journal = session / JOURNAL
        left = [p for p in session.iterdir() if p.name not in (LOCK_FILE, JOURNAL)]
        if not left and not (journal.exists() and any(journal.iterdir())):
            discard_session(session)

    # --- called by the training thread ---

    def stage(self, object_id: str, project_dir: Path, files: list[str], meta: dict) -> Path:
        """Copy files to a private staging folder now, so the script may overwrite them at once."""
        staged = self.staging_dir / object_id
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
        (staged / JOB_FILE).write_text(json.dumps({**meta, "files": files}))
        return staged

    def submit(self, job: TarballJob | MetadataJob) -> None:
        with self._cond:
            self._pending.jobs.append(job)
            if isinstance(job, MetadataJob):
                key = job.experiment.id
                self._pending.metadata_queued[key] = self._pending.metadata_queued.get(key, 0) + 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="git-keepsake-writer", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._pending.jobs) + len(self._pending.deferred) + int(self._busy)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is written; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        notice_at = time.monotonic() + SLOW_FLUSH_NOTICE_SECONDS
        noticed = False
        with self._cond:
            self._flushers += 1
            self._cond.notify_all()
            try:
                while self._pending.jobs or self._pending.deferred or self._busy:
                    now = time.monotonic()
                    if deadline is not None and now >= deadline:
                        return False
                    if not noticed and now >= notice_at:
                        noticed = True
                        count = len(self._pending.jobs) + int(self._busy)
                        print(
                            f"git-keepsake: waiting for {count} pending write(s) "
                            f"to {self.repository.url}...",
                            file=sys.stderr,
                            flush=True,
                        )
                    waits = [0.2]
                    if deadline is not None:
                        waits.append(deadline - now)
                    self._cond.wait(max(0.0, min(waits)))
            finally:
                self._flushers -= 1
        return True

    def raise_errors(self) -> None:
        """In strict mode, surface a background failure in the training thread."""
        with self._cond:
            errors, self._errors = self._errors, []
        if errors and strict():
            raise errors[0]

    # --- the writer thread ---

    def _next_job(self):
        """The next job to run, or None when there is nothing due yet (after waiting a bit)."""
        with self._cond:
            while True:
                p = self._pending
                if p.jobs:
                    self._busy = True
                    return p.jobs.popleft()
                if p.deferred:
                    now = time.monotonic()
                    key, (experiment, due) = min(p.deferred.items(), key=lambda kv: kv[1][1])
                    if self._flushers or due <= now:
                        del p.deferred[key]
                        self._busy = True
                        return _ForcedMetadata(experiment)
                    self._cond.wait(due - now)
                else:
                    self._cond.notify_all()  # wake flushers: all done
                    self._cond.wait()

    def _run(self) -> None:
        while True:
            job = self._next_job()
            try:
                self._do(job)
            except KeepsakeError as e:
                self._fail(e)
            except Exception as e:  # a bug must not kill the thread and hang flush() forever
                self._fail(StorageError(f"unexpected error while writing: {e!r}"))
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _do(self, job) -> None:
        if isinstance(job, RecoveryJob):
            try:
                job.run()
            except KeepsakeError as e:  # theirs, not this run's: its journal is not at stake
                warn(f"could not finish an earlier run's writes: {e}; `git keepsake sync` retries")
            return
        if isinstance(job, TarballJob):
            self._with_retries(
                lambda: self._write_tarball(job), f"{job.kind[:-1]} {job.object_id[:7]}"
            )
            if job.on_stored:
                job.on_stored()
            return
        experiment = job.experiment
        if isinstance(job, MetadataJob):
            with self._cond:
                queued = self._pending.metadata_queued
                queued[experiment.id] -= 1
                if queued[experiment.id]:
                    return  # a later job will write the same file with more in it
                del queued[experiment.id]
                if not self._flushers and self._throttled(experiment):
                    last_end, cost = self._metadata_cost.get(experiment.id, (0.0, 0.0))
                    due = last_end + cost / METADATA_TIME_SHARE
                    self._pending.deferred[experiment.id] = (experiment, due)
                    return
                self._pending.deferred.pop(experiment.id, None)
        self._with_retries(
            lambda: self._write_metadata(experiment), f"experiment {experiment.id[:7]}"
        )

    def _throttled(self, experiment: Experiment) -> bool:
        last_end, cost = self._metadata_cost.get(experiment.id, (0.0, 0.0))
        return time.monotonic() < last_end + cost / METADATA_TIME_SHARE

    def _write_tarball(self, job: TarballJob) -> None:
        upload_staged(self.repository, job.kind, job.object_id, job.staged, job.files)

    def _write_metadata(self, experiment: Experiment) -> None:
        start = time.monotonic()
        self.repository.ensure_created()
        text = experiment._stored_json()
        self.repository.write_experiment(experiment.id, text)
        experiment._record_in_git(text)  # after blob storage: git never names a missing tarball
        end = time.monotonic()
        self._metadata_cost[experiment.id] = (end, end - start)

    def _with_retries(self, action, what: str) -> None:
        """Retry an outage until it ends (or lasts OUTAGE_RETRY_SECONDS); other failures a
        few times (RETRY_DELAYS), then give up: strict mode only skips those."""
        url = self.repository.url
        attempt = 0
        outage_since = None
        while True:
            try:
                action()
                if outage_since is not None:
                    warn(f"{url} is reachable again: wrote {what}")
                return
            except StorageUnavailable as e:
                now = time.monotonic()
                if outage_since is None:
                    outage_since = now
                    warn(f"{e.message}; retrying in the background while training goes on")
                if now - outage_since > OUTAGE_RETRY_SECONDS:
                    raise StorageError(
                        f"could not write {what} to {url}: {e.message}",
                        hint="its files stay staged locally; `git keepsake sync` retries",
                    ) from e
                time.sleep(min(OUTAGE_MAX_DELAY, 0.5 * 2 ** min(attempt, 10)))
                attempt += 1
            except (OSError, StorageError) as e:
                error = e if isinstance(e, StorageError) else StorageError(str(e))
                permanent = isinstance(e, (AccessDenied, BucketNotFound))  # retrying won't help
                if permanent or attempt >= len(RETRY_DELAYS) or strict():
                    raise StorageError(
                        f"could not write {what} to {url}: {error.message}",
                        hint="its files stay staged locally; `git keepsake sync` retries",
                    ) from e
                if attempt == 0:
                    warn(f"writing {what} failed ({error.message}); retrying")
                time.sleep(RETRY_DELAYS[attempt])
                attempt += 1

    def _fail(self, error: KeepsakeError) -> None:
        with self._cond:
            self.failed = True
            self._errors.append(error)
            cause = str(error.__cause__ or error)  # the same refusal, whatever was written
            repeated = cause == self._last_warning
            self._last_warning = cause
        if not repeated:  # one line for a thousand checkpoints refused the same way
            warn(f"{error}; training goes on")


@dataclass
class _ForcedMetadata:
    experiment: Experiment


_live_writers: weakref.WeakSet[Writer] = weakref.WeakSet()


_interrupted = False


def flush_all(timeout: float | None = None) -> None:
    """At exit: wait for every writer. Ctrl-C ends the wait (see interrupted_at_exit)."""
    if _interrupted:
        return
    try:
        for writer in list(_live_writers):
            writer.flush(timeout)
            writer.close_session()
    except KeyboardInterrupt:
        interrupted_at_exit()


def interrupted_at_exit() -> None:
    """Ctrl-C while exit waits for writes (an outage can make that long): stop waiting, and
    say what is left. Its files stay staged, and job.json says what each one is."""
    global _interrupted
    if _interrupted:
        return
    _interrupted = True
    for writer in list(_live_writers):
        count = writer.pending()
        if count:
            print(
                f"git-keepsake: interrupted: {count} write(s) to {writer.repository.url} not "
                f"done; their files stay staged in {writer.session or writer.staging_root}",
                file=sys.stderr,
                flush=True,
            )


atexit.register(flush_all)
# A forked child (a data-loader worker, a helper that exits normally) has copies of the
# writers but not their threads: its exit must not wait on writes that only the parent will
# do (it waited forever), nor tidy away the parent's staging folder.
os.register_at_fork(after_in_child=_live_writers.clear)
