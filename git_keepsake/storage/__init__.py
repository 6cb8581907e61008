"""Blob storage: the interface (base.py), and the URL-scheme registry that picks a backend."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError
from .base import Storage

__all__ = ["Storage", "open_storage"]


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
        bucket, _, prefix = rest.partition("/")
        if scheme == "s3":
            from .s3 import S3Storage as Backend
        else:
            from .gcs import GCSStorage as Backend
        return Backend(bucket, prefix.strip("/"))
    raise ConfigError(
        f"repository URL {url!r} has an unknown scheme {scheme!r}",
        hint="supported schemes: file://, s3://, gs://",
    )
