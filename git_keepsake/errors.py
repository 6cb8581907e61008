"""The one exception tree: every error git-keepsake raises on purpose is a KeepsakeError."""

from __future__ import annotations


class KeepsakeError(Exception):
    """Something the user can fix; `hint` says how."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class InvalidArgument(KeepsakeError, ValueError):
    """A bad value passed to the API: raised at once, before anything is written."""


class ConfigError(KeepsakeError):
    """keepsake.yaml (or a repository URL) is wrong."""


class NotFound(KeepsakeError):
    """No experiment, checkpoint or file matches."""


class NotAnID(InvalidArgument, NotFound):
    """A string that can't be an ID (IDs are hex): bad input, and also nothing matches it
    (Keepsake raised DoesNotExist for it)."""


class Ambiguous(KeepsakeError):
    """An ID prefix matches more than one thing."""


class CorruptRepository(KeepsakeError):
    """Repository data that can't be parsed."""


class IncompatibleRepository(KeepsakeError):
    """A repository written by a newer, incompatible format version."""


class ReadError(KeepsakeError):
    """Keepsake's name for a failed read; every StorageError is one (see StorageError)."""


class WriteError(KeepsakeError):
    """Keepsake's name for a failed write; every StorageError is one (see StorageError)."""


class StorageError(ReadError, WriteError):
    """Blob storage failed (I/O, permissions, network).

    Both a ReadError and a WriteError: the kinds below say what failed, not in which
    operation, so `except ReadError` (or WriteError) catches any storage failure."""


class StorageUnavailable(StorageError):
    """A failure that may pass by itself (throttling, a 5xx, a dropped connection): retried."""


class AccessDenied(StorageError):
    """Missing, wrong or insufficient credentials for a bucket."""


class BucketNotFound(StorageError):
    """The bucket named in the repository URL does not exist (and was not created)."""


class ConfigNotFound(ConfigError):
    """Keepsake's error for a project without keepsake.yaml; never raised here, where no
    config means the default repository (file://.keepsake). Defined so `except` clauses work."""


class GitError(KeepsakeError):
    """A git operation failed; experiments are still recorded in blob storage."""


class UnsafeTarball(KeepsakeError):
    """A tarball member would land outside the target directory or is not a regular file."""
