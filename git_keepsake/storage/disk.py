"""Blob storage in a local (or mounted) directory."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import AccessDenied, NotFound, StorageError, StorageUnavailable
from .base import Storage


class DiskStorage(Storage):
    def __init__(self, root: Path):
        self.root = root
        self.url = "file://" + root.as_posix()

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def _write_atomically(self, key: str, write) -> None:
        """Write through a temp file in the target folder, then rename over the key."""
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-" + target.name)
            try:
                with os.fdopen(fd, "wb") as f:
                    write(f)
                os.chmod(tmp, 0o644)
                os.replace(tmp, target)
            except BaseException:
                _unlink(tmp)
                raise
        except OSError as e:  # which file: the target, or a source `write` was reading
            detail = f"{e.strerror}: {e.filename}" if e.filename else e.strerror or e
            raise _error(e, f"could not write {target}: {detail}") from e

    def put_stream(
        self, key: str, produce: Callable[[BinaryIO], None], *, size_hint: int = 0
    ) -> None:
        self._write_atomically(key, produce)

    def get_file(self, key: str, local_path: str | os.PathLike) -> None:
        try:
            shutil.copyfile(self._path(key), local_path)
        except FileNotFoundError as e:
            raise NotFound(f"{key} is not in {self.url}") from e
        except OSError as e:
            raise _error(e, f"could not read {self._path(key)}: {e.strerror or e}") from e

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write_atomically(key, lambda f: f.write(data))

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as e:
            raise NotFound(f"{key} is not in {self.url}") from e
        except OSError as e:
            raise _error(e, f"could not read {self._path(key)}: {e.strerror or e}") from e

    def list(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix.rstrip("/"))
        for dirpath, _dirs, files in os.walk(base):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in files:
                if not name.startswith(".tmp-"):
                    yield f"{rel}/{name}" if rel != "." else name

    def list_versions(self, prefix: str) -> dict[str, str | None]:
        """One scandir per folder: the stat is already there. Every write is a rename onto a
        new inode, so (inode, mtime, size) changes whenever the blob does."""
        out: dict[str, str | None] = {}
        top = prefix.strip("/")
        folders = [(self._path(top), top + "/" if top else "")]
        while folders:
            folder, key_prefix = folders.pop()
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=False):
                            folders.append((entry.path, f"{key_prefix}{entry.name}/"))
                        elif not entry.name.startswith(".tmp-"):
                            st = entry.stat()
                            version = f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"
                            out[key_prefix + entry.name] = version
            except FileNotFoundError:
                continue
        return out

    def delete(self, key: str) -> None:
        _unlink(self._path(key))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def local_path(self, key: str) -> Path | None:
        return self._path(key)


# What a local or network file system may say that passes by itself (a network mount that
# hangs or fails over): retried like an outage. Anything else (read-only, no permission, a full
# disk) stays until someone acts: retrying only makes stop() wait.
_TRANSIENT = {
    errno.ETIMEDOUT,
    errno.ESTALE,
    errno.ENETDOWN,
    errno.ENETUNREACH,
    errno.EHOSTDOWN,
}
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}


def _error(e: OSError, message: str) -> StorageError:
    if e.errno in _TRANSIENT:
        return StorageUnavailable(message)
    if e.errno in _DENIED:
        return AccessDenied(message, hint="check that the repository folder is writable")
    return StorageError(message)


def _unlink(path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
