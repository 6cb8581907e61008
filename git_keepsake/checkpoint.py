"""The API's Checkpoint and CheckpointList (Keepsake's names): the data of `records`, plus reading
a checkpoint's files back (`open()`, `checkout()`)."""

from __future__ import annotations

import os
import posixpath
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING

from . import records
from .errors import NotFound
from .records import CheckpointRecord
from .runtime import say
from .store.layout import CHECKPOINTS

if TYPE_CHECKING:
    from .workspace import Workspace


class Checkpoint(CheckpointRecord):
    """A checkpoint: metrics at a step, and a snapshot of `path` (weights, usually)."""

    def _workspace(self) -> Workspace:
        if self._experiment is None:
            raise NotFound(f"checkpoint {self.short_id()} is not attached to an experiment")
        return self._experiment._project

    def _check_files(self) -> None:
        if self.files_removed:
            raise NotFound(
                f"the files of checkpoint {self.short_id()} were removed (git keepsake rm)",
                hint="its metrics and step are still recorded",
            )
        if not self.path:
            raise NotFound(
                f"checkpoint {self.short_id()} has no files",
                hint="it was saved without checkpoint(path=...)",
            )

    def _tarball(self, stack: list) -> Path:
        """A local path to this checkpoint's tarball (downloaded to a temp file if remote)."""
        self._check_files()
        workspace = self._workspace()
        if self._experiment is not None and self._experiment.is_pending(self):
            workspace.writer.flush()  # this process wrote it moments ago: let it land first
        tmp = tempfile.TemporaryDirectory(prefix="git-keepsake-")
        stack.append(tmp)
        repository = workspace.repository
        local = repository.local_tarball(CHECKPOINTS, self.id, tmp.name)
        if local is None:
            key = repository.tarball_name(CHECKPOINTS, self.id)
            raise NotFound(f"the files of checkpoint {self.short_id()} are missing: {key}")
        return local

    def checkout(self, output_directory: str | os.PathLike, quiet: bool = False) -> list[str]:
        """Copy this checkpoint's files into output_directory, overwriting what is there (as
        Keepsake does); returns their paths. It is `git keepsake checkout`'s one checkout
        path, with all its checks (`checkout.py`): nothing goes into .git, outside the folder
        or through a symlink, and a damaged tarball is a CorruptRepository."""
        from .checkout import checkout

        self._check_files()
        result = checkout(self._workspace(), self, output_directory, code=False, force=True)
        paths = sorted(result.written + result.unchanged)
        if not quiet:
            say(
                f"checked out {len(paths)} file(s) of checkpoint {self.short_id()} "
                f"to {output_directory}"
            )
        return paths

    def open(self, path: str) -> IO[bytes]:
        """A readable file object for one file of this checkpoint, streamed, not loaded into memory.

        `path` is the file's project-relative path, e.g. "model.pth" or "weights/last.pt".
        """
        from .tarball import open_member

        stack: list = []
        tarball = self._tarball(stack)
        f = open_member(tarball, posixpath.normpath(os.fspath(path).replace(os.sep, "/")))
        if stack:
            # A downloaded tarball lives as long as the file object that reads it.
            close = f.close

            def close_and_cleanup():
                close()
                for tmp in stack:
                    tmp.cleanup()

            f.close = close_and_cleanup  # type: ignore[method-assign]
        return f


class CheckpointList(records.CheckpointList):
    """The checkpoints of an experiment, oldest first."""


class CheckpointCollection:
    """`project.checkpoints`: look checkpoints up by ID across all experiments."""

    def __init__(self, project: Workspace):
        self.project = project

    def get(self, id_or_prefix: str) -> Checkpoint:
        """The checkpoint whose ID starts with `id_or_prefix` (any unambiguous prefix)."""
        return self.project.catalog.get_checkpoint(id_or_prefix)  # type: ignore[return-value]
