"""The blob storage interface and the URL-scheme registry that picks a backend."""

from __future__ import annotations

import abc
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import ConfigError


class Storage(abc.ABC):
    """A flat key space of blobs. Keys are '/'-separated, relative to the repository root.

    Backends only move bytes; tarring, staging, retries and concurrency live above them.
    Every write is atomic: a reader sees the old blob, the new one, or nothing.
    """

    url: str

    @abc.abstractmethod
    def put_file(self, key: str, local_path: str | os.PathLike, *, consume: bool = False) -> None:
        """Store a local file. With consume=True the caller gives the file up (it may be moved)."""

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


def open_storage(url: str, project_dir: str | os.PathLike) -> Storage:
    """The backend for a repository URL; a relative file:// path is relative to the project."""
    scheme, sep, rest = url.partition("://")
    if not sep or not rest:
        raise ConfigError(
            f"repository URL {url!r} is not a URL",
            hint='use "file://.keepsake", "s3://bucket/prefix" or "gs://bucket/prefix"',
        )
    if scheme == "file":
        from .disk import DiskStorage

        return DiskStorage(Path(project_dir, rest).resolve())
    if scheme in ("s3", "gs"):
        raise ConfigError(
            f"{scheme}:// repositories are not supported by this version yet",
            hint='use a local repository for now: repository: "file://.keepsake"',
        )
    raise ConfigError(
        f"repository URL {url!r} has an unknown scheme {scheme!r}",
        hint="supported schemes: file://, s3://, gs://",
    )
