"""What the bucket backends share: key prefixes, error mapping, retries, creating a bucket.

A backend (s3.py, gcs.py) does one provider request per method and says, in its own table,
which kind of problem each provider error is. Everything else is here, once:
- PROBLEMS turns a kind into our error, with one message and hint for every provider;
- transient problems (throttling, 5xx, dropped connections) are retried with backoff;
- a write into a missing bucket creates it, if the credentials allow, and goes on.
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import io
import os
import random
import re
import threading
import time
from collections.abc import Callable
from typing import BinaryIO

from ..errors import (
    AccessDenied,
    BucketNotFound,
    ConfigError,
    NotFound,
    StorageError,
    StorageUnavailable,
)
from .base import Storage

# kind -> (error class, message, hint). Fields: url, key, bucket, detail, credentials_hint.
PROBLEMS: dict[str, tuple[type[StorageError] | type[NotFound], str, str | None]] = {
    "not_found": (NotFound, "{key} is not in {url}", None),
    "no_bucket": (
        BucketNotFound,
        "bucket {bucket!r} does not exist",
        "check the bucket name in the repository URL {url}",
    ),
    "cannot_create": (
        BucketNotFound,
        "bucket {bucket!r} does not exist, and could not be created: {detail}",
        "create it, or check the bucket name in the repository URL {url}",
    ),
    "no_credentials": (AccessDenied, "no credentials to reach {url}", "{credentials_hint}"),
    "bad_credentials": (
        AccessDenied,
        "the credentials for {url} were refused: {detail}",
        "{credentials_hint}",
    ),
    "denied": (
        AccessDenied,
        "access to {url} was denied: {detail}",
        "check that these credentials may read and write bucket {bucket!r}",
    ),
    "unavailable": (
        StorageUnavailable,
        "cannot reach {url}: {detail}",
        "check the network (and the endpoint, if one is set); it was retried",
    ),
    "failed": (StorageError, "{url}: {detail}", None),
}

_RAISE = object()

PIPE_BUFFER = 1 << 20  # bytes buffered on each side of a streamed upload's pipe

# Backoff before each retry of a transient problem (seconds; each jittered to 50-100%).
RETRY_DELAYS = (0.2, 0.8, 2.5)


class RemoteStorage(Storage):
    concurrency = 32
    listing_has_versions = True
    scheme: str
    credentials_hint: str
    bucket_name_rule: re.Pattern

    def __init__(self, bucket: str, prefix: str):
        if not self.bucket_name_rule.fullmatch(bucket):
            raise ConfigError(
                f"{bucket!r} is not a valid bucket name in {self.scheme}://{bucket}",
                hint="bucket names are 3-63 lowercase letters, digits, dots and hyphens",
            )
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self.url = f"{self.scheme}://{bucket}" + (f"/{prefix}" if prefix else "")
        self._client_lock = threading.Lock()
        self._client = None
        self._bucket_checked = False

    # --- what each backend provides ---

    @abc.abstractmethod
    def _connect(self):
        """A thread-safe client of the provider's SDK (imported here, lazily)."""

    @abc.abstractmethod
    def _classify(self, error: Exception) -> tuple[str, str] | None:
        """(kind, detail) for a provider error; None for one this backend doesn't know."""

    @abc.abstractmethod
    def _bucket_exists(self) -> bool:
        """True, or a provider error (a 404 means no bucket)."""

    @abc.abstractmethod
    def _create_bucket(self) -> None: ...

    @abc.abstractmethod
    def _upload_stream(self, key: str, stream: _Pipe, size_hint: int) -> None:
        """One upload of what `stream.read()` returns until it ends, in parts or chunks."""

    def put_stream(
        self, key: str, produce: Callable[[BinaryIO], None], *, size_hint: int = 0
    ) -> None:
        def upload_once() -> None:  # a retry produces the bytes again: a pipe can't rewind
            with _Pipe(produce) as stream:
                self._upload_stream(key, stream, size_hint)

        self._call(upload_once, key, write=True)

    # --- shared ---

    @property
    def client(self):
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    try:
                        self._client = self._call(self._connect)
                    except ImportError as e:
                        raise ConfigError(
                            f"{self.scheme}:// repositories need the {e.name} package",
                            hint="pip install -U git-keepsake (it installs boto3 and "
                            "google-cloud-storage)",
                        ) from e
        return self._client

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _call(self, action, key: str = "", *, write: bool = False, if_missing=_RAISE):
        """Run one provider request: retried while the problem is transient, the bucket
        created when a write finds none, provider errors turned into ours. A missing key
        (or bucket) returns `if_missing` when given (exists, delete), else raises NotFound."""
        created = False
        attempt = 0
        while True:
            try:
                return action()
            except Exception as e:
                kind, detail = self._problem(e)
                if kind in ("not_found", "no_bucket") and if_missing is not _RAISE:
                    return if_missing  # nothing there: not in a missing bucket either
                # A write can't miss a key, only the bucket (maybe created meanwhile).
                if kind == "not_found" and (write or not self._bucket_known()):
                    kind = "no_bucket"
                if kind == "no_bucket" and write and not created:
                    self._create_bucket_or_explain()
                    created = True
                    continue
                if kind == "unavailable" and attempt < len(RETRY_DELAYS):
                    time.sleep(RETRY_DELAYS[attempt] * random.uniform(0.5, 1.0))
                    attempt += 1
                    continue
                raise self._error(kind, detail, key) from e

    def _problem(self, error: Exception) -> tuple[str, str]:
        if isinstance(error, _ProduceFailed):
            raise error.source
        found = self._classify(error)
        if found is not None:
            return found
        if isinstance(error, (ConnectionError, TimeoutError)):
            return "unavailable", str(error)
        if isinstance(error, (StorageError, NotFound)):
            raise error
        return "failed", f"{type(error).__name__}: {error}"

    def _error(self, kind: str, detail: str, key: str = "") -> StorageError | NotFound:
        cls, message, hint = PROBLEMS[kind]
        fields = {
            "url": self.url,
            "key": key,
            "bucket": self.bucket,
            "detail": _one_line(detail),
            "credentials_hint": self.credentials_hint,
        }
        return cls(message.format(**fields), hint=hint.format(**fields) if hint else None)

    def _bucket_known(self) -> bool:
        """Whether the bucket exists (asked once, then remembered): a 404 on a key may mean
        the bucket is missing, and that deserves its own message."""
        if not self._bucket_checked:
            self._bucket_checked = self._call(self._bucket_exists, if_missing=False)
        return self._bucket_checked

    def _create_bucket_or_explain(self) -> None:
        try:
            self._create_bucket()
        except Exception as e:
            kind, detail = self._problem(e)
            if kind in ("denied", "bad_credentials", "failed"):
                raise self._error("cannot_create", detail) from e
            if kind != "exists":  # made meanwhile by another writer: fine
                raise self._error(kind, detail) from e
        self._bucket_checked = True


class _ProduceFailed(Exception):
    """The bytes' source failed, not the provider: _call raises `source` as it is."""

    def __init__(self, source: BaseException):
        super().__init__(str(source))
        self.source = source


class _Pipe:
    """What `produce(file)` writes in a thread of its own, read here as a forward-only stream.

    The upload sends while the tarball is still being written: tarring overlaps the network,
    and there is no intermediate file. The stream ends only if `produce` returned; if it
    raised, the last read raises its error instead, so a truncated blob is never stored.
    """

    def __init__(self, produce: Callable[[BinaryIO], None]):
        read_fd, write_fd = os.pipe()
        with contextlib.suppress(AttributeError, OSError):  # Linux: fewer, bigger copies
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_BUFFER)
        self._reader = open(read_fd, "rb", buffering=PIPE_BUFFER)  # noqa: SIM115 (__exit__)
        self._position = 0
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._produce, args=(produce, write_fd), name="git-keepsake-tar", daemon=True
        )
        self._thread.start()

    def _produce(self, produce: Callable[[BinaryIO], None], write_fd: int) -> None:
        # Closing may fail once the reader gave up: then there is nobody left to tell.
        with contextlib.suppress(OSError), open(write_fd, "wb", buffering=PIPE_BUFFER) as out:
            try:
                produce(out)
                out.flush()
            except BaseException as e:  # told to the reader, before it can see the end
                self._error = e

    def read(self, size: int = -1) -> bytes:
        data = self._reader.read(size)  # blocks until `size` bytes, or the end
        self._position += len(data)
        if size < 0 or len(data) < size:
            self._thread.join()
            if self._error is not None:
                raise _ProduceFailed(self._error)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if (whence, offset) in ((os.SEEK_SET, self._position), (os.SEEK_CUR, 0)):
            return self._position
        raise io.UnsupportedOperation("the stream only goes forward")

    def __enter__(self) -> _Pipe:
        return self

    def __exit__(self, *exc) -> None:
        self._reader.close()  # a producer still writing gets EPIPE and stops
        self._thread.join()


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= 200 else text[:197] + "..."
