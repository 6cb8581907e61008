"""The background writer: turns staged snapshots into tarballs and metadata in the repository.

`checkpoint()` only copies files into a staging folder on local disk and queues a job; this thread
does the slow part. Jobs run in order, so a metadata file is written after the tarballs it names
(readers never see a checkpoint whose files are missing). Metadata writes of one experiment are
coalesced and throttled: a run logging 10,000 checkpoints does not rewrite an ever-growing JSON
file 10,000 times, yet `flush()`/`stop()`/exit always leave it complete.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import runtime
from ..errors import KeepsakeError, StorageError, StorageUnavailable
from ..runtime import strict, warn
from ..tarball import write_tarball
from .journal import Session
from .layout import Repository
from .publish import Recording

# Metadata writes may take at most this share of the writer's time while checkpoints stream in.
METADATA_TIME_SHARE = 0.1
# While storage is unreachable (network, outage, throttling) writes wait and retry, training goes
# on, and checkpoints pile up staged on local disk. Past this long the write is given up on
# (its files stay staged).
OUTAGE_RETRY_SECONDS = 30 * 60
OUTAGE_MAX_DELAY = 10.0
SLOW_FLUSH_NOTICE_SECONDS = 1.0


def upload_staged(
    repository: Repository, kind: str, object_id: str, staged: Path, files: list[str]
) -> None:
    """Tar a staged folder straight into the upload (no tarball on local disk, and tarring
    overlaps sending; a retry tars again), then remove the folder."""
    repository.ensure_created()
    paths = [(rel, staged / "files" / rel) for rel in files]
    repository.put_tarball(
        kind,
        object_id,
        lambda out: write_tarball(out, object_id, paths),
        size_hint=sum(path.stat().st_size for _, path in paths),
    )
    shutil.rmtree(staged, ignore_errors=True)


@dataclass
class TarballJob:
    kind: str  # layout.EXPERIMENTS or layout.CHECKPOINTS
    object_id: str
    staged: Path  # staging folder: files/<relpath> and job.json
    files: list[str]
    on_stored: Callable[[], None] | None = None  # run once the tarball is in the repository


@dataclass
class MetadataJob:
    recording: Recording


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
        # This process's staged files and journal: what recovery needs if it dies.
        self.session = Session(staging_root)
        self._cond = threading.Condition()
        self._pending = _Pending()
        self._busy = False
        self._flushers = 0
        self._errors: list[KeepsakeError] = []
        self.failed = False  # some write gave up: the journal stays for recovery
        self._metadata_cost: dict[str, float] = {}
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        runtime.writers.add(self)

    def owned_here(self) -> bool:
        """False in a forked child: the thread that writes, and the session folder, are the
        parent's, so nothing given to this writer there would ever be written."""
        return os.getpid() == self._pid

    def close_session(self) -> None:
        """At exit: the session folder goes if nothing is left in it for recovery."""
        if not self.pending():
            self.session.close()

    def report_interrupted(self) -> None:
        """Ctrl-C ended the wait at exit: say what is left. Its files stay staged, and each
        staged folder's job.json says what it is."""
        count = self.pending()
        if count:
            runtime.say(
                f"interrupted: {count} write(s) to {self.repository.url} not done; "
                f"their files stay staged in {self.session.folder or self.staging_root}"
            )

    # --- called by the training thread ---

    def submit(self, job: TarballJob | MetadataJob) -> None:
        with self._cond:
            self._pending.jobs.append(job)
            if isinstance(job, MetadataJob):
                key = job.recording.id
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
        """Wait until everything queued so far is written; False on timeout. In a forked
        child there is nothing of its own to wait for (its copy of the queue is the parent's)."""
        if not self.owned_here():
            return True
        if runtime.interrupted():  # Ctrl-C said: stop waiting (the files stay staged)
            return not self.pending()
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
                        runtime.say(
                            f"waiting for {count} pending write(s) to {self.repository.url}..."
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
        if not self.owned_here():  # the parent's lock may have been held at the fork
            return
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
                    key, (recording, due) = min(p.deferred.items(), key=lambda kv: kv[1][1])
                    if self._flushers or due <= now:
                        del p.deferred[key]
                        self._busy = True
                        return _ForcedMetadata(recording)
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
        recording = job.recording
        if isinstance(job, MetadataJob):
            with self._cond:
                queued = self._pending.metadata_queued
                queued[recording.id] -= 1
                if queued[recording.id]:
                    return  # a later job will write the same file with more in it
                del queued[recording.id]
                if not self._flushers and self._throttled(recording.id):
                    last_end, cost = self._metadata_cost.get(recording.id, (0.0, 0.0))
                    due = last_end + cost / METADATA_TIME_SHARE
                    self._pending.deferred[recording.id] = (recording, due)
                    return
                self._pending.deferred.pop(recording.id, None)
        self._with_retries(
            lambda: self._write_metadata(recording), f"experiment {recording.id[:7]}"
        )

    def _throttled(self, experiment_id: str) -> bool:
        last_end, cost = self._metadata_cost.get(experiment_id, (0.0, 0.0))
        return time.monotonic() < last_end + cost / METADATA_TIME_SHARE

    def _write_tarball(self, job: TarballJob) -> None:
        upload_staged(self.repository, job.kind, job.object_id, job.staged, job.files)

    def _write_metadata(self, recording: Recording) -> None:
        start = time.monotonic()
        recording.publish()
        end = time.monotonic()
        self._metadata_cost[recording.id] = (end, end - start)

    def _with_retries(self, action, what: str) -> None:
        """Wait out an outage (StorageUnavailable: the storage layer says what is transient,
        and has retried the request already) until it ends or lasts OUTAGE_RETRY_SECONDS. Any
        other failure (read-only, access denied, a full disk) won't pass by itself: given up
        on at once, its files staying staged."""
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
                    raise _given_up(what, url, e) from e
                time.sleep(min(OUTAGE_MAX_DELAY, 0.5 * 2 ** min(attempt, 10)))
                attempt += 1
            except (OSError, StorageError) as e:
                raise _given_up(what, url, e) from e

    def _fail(self, error: KeepsakeError) -> None:
        with self._cond:
            self.failed = True
            self._errors.append(error)
        runtime.tell_once(error, f"{error}; training goes on", self.repository.url)


@dataclass
class _ForcedMetadata:
    recording: Recording


def _given_up(what: str, url: str, e: Exception) -> StorageError:
    message = e.message if isinstance(e, StorageError) else str(e)
    return StorageError(
        f"could not write {what} to {url}: {message}",
        hint="its files stay staged locally; `git keepsake sync` retries",
    )
