"""Checkpoint / CheckpointList: one saved version of a run's outputs, and reading its files back."""

from __future__ import annotations

import datetime as dt
import os
import posixpath
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from . import metadata
from .errors import NotFound
from .repository import tarball_key

if TYPE_CHECKING:
    from .experiment import Experiment
    from .project import Project


class Checkpoint:
    """A checkpoint: metrics at a step, and a snapshot of `path` (weights, usually)."""

    def __init__(
        self,
        id: str,
        created: dt.datetime,
        path: str | None = None,
        step: int | None = None,
        metrics: dict[str, Any] | None = None,
        primary_metric: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ):
        self.id = id
        self.created = created
        self.path = path
        self.step = step
        self.metrics = metrics
        self.primary_metric = primary_metric
        self._extra = extra or {}
        self._experiment: Experiment | None = None
        self._created_text: str | None = None  # as read: rewriting keeps Go's nanoseconds
        self._stored = True  # False while its tarball is still being written

    def __repr__(self) -> str:
        return f"Checkpoint(id={self.id!r}, step={self.step!r}, metrics={self.metrics!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Checkpoint) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def short_id(self) -> str:
        return self.id[: metadata.SHORT_ID_LENGTH]

    def _mark_stored(self) -> None:
        self._stored = True

    @property
    def experiment(self) -> Experiment | None:
        return self._experiment

    def primary_metric_value(self) -> float | None:
        """The value of this checkpoint's primary metric, or None if missing, NaN or non-numeric."""
        if not self.primary_metric or not self.metrics:
            return None
        value = self.metrics.get(self.primary_metric.get("name"))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            return None
        return float(value)

    # --- the format ---

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Checkpoint:
        known = set(metadata.CHECKPOINT_FIELDS)
        created_text = data.get("created") or ""
        checkpoint = cls(
            id=data["id"],
            created=metadata.parse_time(created_text),
            path=data.get("path") or None,
            step=data.get("step"),
            metrics=metadata.from_wire(data.get("metrics")) or None,
            primary_metric=data.get("primary_metric") or None,
            extra={k: v for k, v in data.items() if k not in known},
        )
        checkpoint._created_text = created_text
        return checkpoint

    def to_json(self) -> dict[str, Any]:
        """Keepsake's checkpoint object: empty maps are null, no path is ""."""
        return {
            "id": self.id,
            "created": self._created_text or metadata.format_time(self.created),
            "metrics": self.metrics or None,
            "step": self.step,
            "path": self.path or "",
            "primary_metric": self.primary_metric or None,
            **self._extra,
        }

    # --- reading files back ---

    def _project(self) -> Project:
        if self._experiment is None:
            raise NotFound(f"checkpoint {self.short_id()} is not attached to an experiment")
        return self._experiment._project

    def _tarball(self, stack: list) -> Path:
        """A local path to this checkpoint's tarball (downloaded to a temp file if remote)."""
        if not self.path:
            raise NotFound(
                f"checkpoint {self.short_id()} has no files",
                hint="it was saved without checkpoint(path=...)",
            )
        project = self._project()
        if not self._stored:
            project.writer.flush()  # this process wrote it moments ago: let it land first
        tmp = tempfile.TemporaryDirectory(prefix="git-keepsake-")
        stack.append(tmp)
        local = project.repository.local_tarball("checkpoints", self.id, tmp.name)
        if local is None:
            key = tarball_key("checkpoints", self.id)
            raise NotFound(f"the files of checkpoint {self.short_id()} are missing: {key}")
        return local

    def checkout(self, output_directory: str | os.PathLike, quiet: bool = False) -> list[str]:
        """Copy this checkpoint's files into output_directory; returns the paths written."""
        from .tarball import extract_tarball

        stack: list = []
        try:
            written = extract_tarball(self._tarball(stack), output_directory)
        finally:
            for tmp in stack:
                tmp.cleanup()
        if not quiet:
            print(
                f"git-keepsake: checked out {len(written)} file(s) of checkpoint "
                f"{self.short_id()} to {output_directory}",
                file=sys.stderr,
            )
        return written

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


class CheckpointList(list):
    """The checkpoints of an experiment, oldest first."""

    def __init__(self, items: Iterable[Checkpoint] = ()):
        super().__init__(items)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return CheckpointList(super().__getitem__(key))
        return super().__getitem__(key)

    @property
    def step(self) -> list[int | None]:
        return [chk.step for chk in self]

    @property
    def metrics(self) -> _MetricColumns:
        return _MetricColumns(self)

    def primary_metric(self) -> str:
        """The primary metric shared by these checkpoints (ValueError if none or several)."""
        names = {c.primary_metric["name"] for c in self if c.primary_metric}
        if not names:
            raise ValueError("no primary metric is set on these checkpoints")
        if len(names) > 1:
            raise ValueError(f"the checkpoints have different primary metrics: {sorted(names)}")
        return names.pop()


class _MetricColumns:
    """`experiment.checkpoints.metrics["loss"]`: one value per checkpoint, None where absent."""

    def __init__(self, checkpoints: CheckpointList):
        self._checkpoints = checkpoints

    def __getitem__(self, name: str) -> list[Any]:
        values = [(c.metrics or {}).get(name) for c in self._checkpoints]
        if all(v is None for v in values):
            raise KeyError(f"metric {name!r} does not exist in these checkpoints")
        return values


class CheckpointCollection:
    """`project.checkpoints`: look checkpoints up by ID across all experiments."""

    def __init__(self, project: Project):
        self.project = project

    def get(self, id_or_prefix: str) -> Checkpoint:
        """The checkpoint whose ID starts with `id_or_prefix` (any unambiguous prefix)."""
        return self.project.catalog.get_checkpoint(id_or_prefix)
