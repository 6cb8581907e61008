"""Experiments removed here: local, private state that makes `git keepsake rm` stick.

`rm` deletes an experiment's refs, but a git remote it was pushed to still has them, and the
next pull (every push pulls first) would bring them back. So `rm` leaves a tombstone, one
empty file per experiment in the project's state dir (`.git/keepsake/removed/<id>`): never
pushed, so removing is a decision of this clone, not of the team. A pull skips what has a
tombstone and says so; `git keepsake pull --include-removed` brings them back and drops their
tombstones.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

from .metadata import is_id
from .store.journal import write_durably


class Tombstones:
    def __init__(self, folder: Path):
        self.folder = folder

    def add(self, experiment_id: str) -> None:
        """Record a removal, durably: it must outlive this process and a power cut."""
        self.folder.mkdir(parents=True, exist_ok=True)
        write_durably(self.folder / experiment_id, b"")

    def ids(self) -> set[str]:
        try:
            return {name for name in os.listdir(self.folder) if is_id(name)}
        except (FileNotFoundError, NotADirectoryError):
            return set()

    def discard(self, experiment_ids: Iterable[str]) -> None:
        for experiment_id in experiment_ids:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.folder / experiment_id)
