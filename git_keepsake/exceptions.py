"""Keepsake 0.4.2's exception names (`keepsake.exceptions`), as names in our one tree
(git_keepsake.errors): `except keepsake.exceptions.DoesNotExist` catches what Keepsake raised
it for."""

from __future__ import annotations

from .errors import ConfigError as RepositoryConfigurationError
from .errors import ConfigNotFound, ReadError, WriteError
from .errors import CorruptRepository as CorruptedRepositorySpec
from .errors import IncompatibleRepository as IncompatibleRepositoryVersion
from .errors import NotFound as DoesNotExist

__all__ = [
    "ConfigNotFound",
    "CorruptedRepositorySpec",
    "DoesNotExist",
    "IncompatibleRepositoryVersion",
    "ReadError",
    "RepositoryConfigurationError",
    "WriteError",
]
