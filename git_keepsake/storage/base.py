"""The blob storage interface every backend implements."""

from __future__ import annotations

import abc
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from ..errors import NotFound


class Storage(abc.ABC):
    """A flat key space of blobs. Keys are '/'-separated, relative to the repository root.

    Backends only move bytes; tarring, staging, retries and concurrency live above them.
    Every write is atomic: a reader sees the old blob, the new one, or nothing.
    """

    url: str
    # How many requests are worth having in flight at once: 1 for a local disk, many for a
    # bucket, where each request mostly waits on the network.
    concurrency = 1
    # True where list_versions costs what list costs (a bucket listing carries ETags or
    # generations; a folder listing would need a stat per file).
    listing_has_versions = False

    @abc.abstractmethod
    def put_stream(
        self, key: str, produce: Callable[[BinaryIO], None], *, size_hint: int = 0
    ) -> None:
        """Store what `produce(file)` writes into `file` (a binary file with a real file
        descriptor), sent while it is being written. `produce` may be called again if the
        transfer restarts. If it raises, nothing is stored and its error comes out (or a
        StorageError caused by it), not retried. `size_hint`: roughly how many
        bytes it will write, for choosing part sizes."""

    @abc.abstractmethod
    def get_file(self, key: str, local_path: str | os.PathLike) -> None:
        """Download a blob to a local file; NotFound if it is missing."""

    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    @abc.abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """NotFound if the key is missing."""

    @abc.abstractmethod
    def list(self, prefix: str) -> Iterator[str]:
        """Keys under `prefix` (a folder, ending in '/'), recursively, in no particular order."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove a blob; a missing one is not an error."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    def list_versions(self, prefix: str) -> dict[str, str | None]:
        """{key: version} under `prefix`: a token that changes whenever the blob does (ETag,
        generation, inode+mtime), so readers can cache; None where the backend has none."""
        return dict.fromkeys(self.list(prefix))

    def local_path(self, key: str) -> Path | None:
        """Where the blob lies on local disk, if it does: lets readers open it in place."""
        return None

    # --- many keys at once: concurrent where the backend gains from it ---

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        """{key: bytes} for the keys that exist; missing ones are left out."""

        def get(key: str) -> tuple[str, bytes | None]:
            try:
                return key, self.get_bytes(key)
            except NotFound:
                return key, None

        return {k: v for k, v in self._map(get, keys) if v is not None}

    def existing(self, keys: Iterable[str]) -> set[str]:
        """Those of `keys` that exist."""
        keys = list(keys)
        return {k for k, there in zip(keys, self._map(self.exists, keys), strict=True) if there}

    def delete_many(self, keys: Iterable[str]) -> None:
        for _ in self._map(self.delete, keys):
            pass

    def _map(self, fn, items: Iterable):
        items = list(items)
        if self.concurrency <= 1 or len(items) <= 1:
            return map(fn, items)
        with ThreadPoolExecutor(min(self.concurrency, len(items))) as pool:
            return list(pool.map(fn, items))  # raises the first error
