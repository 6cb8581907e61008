"""Experiments and checkpoints as data: their fields, the Keepsake 0.4 JSON mapping, the git
record (`GitInfo`), and what can be worked out from the data alone (best, latest, duration).

No storage, git or process state here: the api layer (`experiment.py`, `checkpoint.py`) adds
recording and reading files back, and the catalog fills in what it read.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Callable, Iterable
from typing import Any

from . import metadata

# Our field: the interpreter's command line, to re-run it (`command` is sys.argv, as Keepsake).
COMMAND_LINE_FIELD = "command_line"
GIT_FIELD = "git"  # our field in the experiment JSON (Keepsake 0.4.2 ignores unknown fields)
_EXPERIMENT_FIELDS = frozenset(metadata.EXPERIMENT_FIELDS)


@dataclasses.dataclass(frozen=True)
class GitInfo:
    """Where an experiment's code is in git: the `git` field of its JSON.

    commit: HEAD at init() (None in a repository without commits, or when imported from a run
    recorded elsewhere); branch: HEAD's branch (None when detached); dirty: the snapshot differs
    from HEAD; snapshot: the snapshot commit; remote: origin's URL; imported: `sync` made the
    snapshot from the experiment's tarball.
    """

    commit: str | None = None
    branch: str | None = None
    dirty: bool | None = None
    snapshot: str | None = None
    remote: str | None = None
    imported: bool = False
    # The keys the JSON has (a field absent from it is not written back as null), and any we
    # don't know, kept as they were.
    keys: tuple[str, ...] = ("commit", "branch", "dirty", "snapshot", "remote")
    extra: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def from_json(cls, data: Any) -> GitInfo | None:
        if not isinstance(data, dict):
            return None
        known = _GIT_FIELDS
        return cls(
            commit=_text(data.get("commit")),
            branch=_text(data.get("branch")),
            dirty=data.get("dirty") if isinstance(data.get("dirty"), bool) else None,
            snapshot=_text(data.get("snapshot")),
            remote=_text(data.get("remote")),
            imported=data.get("imported") is True,
            keys=tuple(k for k in data if k in known),
            extra=tuple((k, v) for k, v in data.items() if k not in known),
        )

    def to_json(self) -> dict[str, Any]:
        out = {key: getattr(self, key) for key in self.keys}
        return {**out, **dict(self.extra)}

    def replace(self, **changes: Any) -> GitInfo:
        """A copy with `changes`; the fields changed are written even if the JSON lacked them."""
        keys = self.keys + tuple(k for k in changes if k not in self.keys)
        return dataclasses.replace(self, keys=keys, **changes)

    @property
    def recorded_outside_git(self) -> bool:
        """Imported by `sync` from a run that had no commit here to start from."""
        return self.imported and not self.commit


_GIT_FIELDS = frozenset(f.name for f in dataclasses.fields(GitInfo)) - {"keys", "extra"}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class _Record:
    """What experiments and checkpoints share: a 64-hex ID (equal IDs, equal records) and a
    creation time, kept as it was read (Go writes nanoseconds; Python keeps microseconds)."""

    id: str
    created: dt.datetime
    _created_text: str | None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, type(self)._family) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def short_id(self) -> str:
        return self.id[: metadata.SHORT_ID_LENGTH]

    @property
    def created_text(self) -> str:
        """`created` as stored: as it was read, else formatted the Keepsake way."""
        return self._created_text or metadata.format_time(self.created)

    _family: type[_Record]  # records compare equal within it: experiments, or checkpoints

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if _Record in cls.__bases__:  # ExperimentRecord, CheckpointRecord; not the API's
            cls._family = cls


FILES_REMOVED = "files_removed"


class CheckpointRecord(_Record):
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
        self._experiment: ExperimentRecord | None = None
        self._created_text: str | None = None  # as read: rewriting keeps Go's nanoseconds

    def __repr__(self) -> str:
        return f"Checkpoint(id={self.id!r}, step={self.step!r}, metrics={self.metrics!r})"

    @property
    def experiment(self) -> Any:
        """The experiment this checkpoint belongs to (None if detached)."""
        return self._experiment

    @property
    def files_removed(self) -> bool:
        """True once `git keepsake rm` deleted its files; its metrics stay. Recorded as an extra
        JSON field, which Keepsake 0.4.2 ignores."""
        return bool(self._extra.get(FILES_REMOVED))

    def mark_files_removed(self) -> None:
        self._extra[FILES_REMOVED] = True

    def primary_metric_value(self) -> float | None:
        """The value of this checkpoint's primary metric, or None if missing, NaN or non-numeric."""
        if not self.primary_metric or not self.metrics:
            return None
        value = self.metrics.get(self.primary_metric.get("name", ""))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            return None
        return float(value)

    @classmethod
    def from_json(cls, data: dict[str, Any]):
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
            "created": self.created_text,
            "metrics": self.metrics or None,
            "step": self.step,
            "path": self.path or "",
            "primary_metric": self.primary_metric or None,
            **self._extra,
        }


class CheckpointList(list):
    """The checkpoints of an experiment, oldest first."""

    def __init__(self, items: Iterable[CheckpointRecord] = ()):
        super().__init__(items)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return type(self)(super().__getitem__(key))
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


class ExperimentRecord(_Record):
    """One run of a training script: its code, params and environment, and its checkpoints.

    An experiment from a listing may be built from a summary: its checkpoints (and packages)
    are then read on first use, through `lazy`.
    """

    checkpoint_type: type[CheckpointRecord] = CheckpointRecord
    list_type: type[CheckpointList] = CheckpointList

    def __init__(
        self,
        project: Any,
        id: str,
        created: dt.datetime,
        user: str | None = None,
        host: str | None = None,
        command: str | None = None,
        config: dict[str, Any] | None = None,
        path: str | None = None,
        params: dict[str, Any] | None = None,
        python_version: str | None = None,
        python_packages: dict[str, str] | None = None,
        keepsake_version: str | None = None,
        checkpoints: Iterable[CheckpointRecord] = (),
        extra: dict[str, Any] | None = None,
        git: GitInfo | None = None,
    ):
        # Whose repository it is in (a Workspace, not imported here: it is a layer above).
        self._project = project
        self.id = id
        self.created = created
        self.user = user
        self.host = host
        self.command = command
        self.config = config
        self.path = path
        self.params = params
        self.python_version = python_version
        self._python_packages = python_packages
        self.keepsake_version = keepsake_version
        self.git = git
        self._extra = extra or {}
        self._created_text: str | None = None
        self._checkpoints: CheckpointList | None = None
        self._load_full: Callable[[], dict[str, Any]] | None = None
        self._packages_loaded = True
        self._summary: dict[str, CheckpointRecord | None] | None = None  # from the index
        self._count: int | None = None  # number of checkpoints, from the index
        # Running or not, as a listing read it (all heartbeats at once); else asked each time.
        self._alive: bool | None = None
        # False: in this project's staging journal alone, not in the repository (its writes
        # failed or are under way; `git keepsake sync` uploads it).
        self.uploaded = True
        self.lock = threading.Lock()  # the recording thread appends while the writer reads
        self._set_checkpoints(checkpoints)

    def __repr__(self) -> str:
        return f"Experiment(id={self.id!r}, params={self.params!r})"

    # --- checkpoints and packages, read on first use for experiments from a listing ---

    @property
    def checkpoints(self) -> CheckpointList:
        """All checkpoints, oldest first."""
        if self._checkpoints is None:
            self._read_full()
        assert self._checkpoints is not None
        return self._checkpoints

    @checkpoints.setter
    def checkpoints(self, value: Iterable[CheckpointRecord]) -> None:
        self._set_checkpoints(value)

    @property
    def python_packages(self) -> dict[str, str] | None:
        """{name: version} of the packages the script had imported (read on first use for
        experiments from a listing: it is most of the metadata, and `ls` never shows it)."""
        if not self._packages_loaded:
            self._read_full()
        return self._python_packages

    @python_packages.setter
    def python_packages(self, value: dict[str, str] | None) -> None:
        self._python_packages, self._packages_loaded = value, True

    def _read_full(self) -> None:
        data = self._load_full() if self._load_full is not None else {}
        self._load_full = None
        if self._checkpoints is None:
            make = self.checkpoint_type.from_json
            self._set_checkpoints(make(c) for c in data.get("checkpoints") or ())
        if not self._packages_loaded:
            self.python_packages = data.get("python_packages")

    def _set_checkpoints(self, checkpoints: Iterable[CheckpointRecord]) -> None:
        self._checkpoints = self.list_type(checkpoints)
        self._summary = None
        for chk in self._checkpoints:
            chk._experiment = self

    def attach(self, checkpoint: CheckpointRecord) -> CheckpointRecord:
        checkpoint._experiment = self
        return checkpoint

    # --- worked out from the data ---

    def latest(self) -> CheckpointRecord | None:
        if self._summary is not None:
            return self._summary["latest"]
        return self.checkpoints[-1] if self.checkpoints else None

    def best(self) -> CheckpointRecord | None:
        """The checkpoint with the best primary metric; missing and NaN values are ignored."""
        if self._summary is not None:
            return self._summary["best"]
        candidates = [c for c in self.checkpoints if c.primary_metric_value() is not None]
        if not candidates:
            return None
        goal = candidates[0].primary_metric.get("goal", "minimize")  # type: ignore[union-attr]
        sign = -1.0 if goal == "minimize" else 1.0
        # Of equals, the latest checkpoint wins, as in Keepsake 0.4.2 (max() keeps the first).
        return max(reversed(candidates), key=lambda c: sign * c.primary_metric_value())  # type: ignore[operator]

    def primary_metric(self) -> str:
        return self.checkpoints.primary_metric()

    def representative(self) -> tuple[CheckpointRecord | None, str | None]:
        """The checkpoint that stands for this experiment in checkout and diff, and why:
        (best, "best"), else (latest, "latest"), else (None, None)."""
        best = self.best()
        if best is not None:
            return best, "best"
        latest = self.latest()
        return latest, "latest" if latest is not None else None

    def checkpoint_count(self) -> int:
        """len(checkpoints), without reading them when a listing already knows."""
        if self._checkpoints is None and self._count is not None:
            return self._count
        return len(self.checkpoints)

    def best_summary(self) -> tuple[str, float | None, int | None] | None:
        """(primary metric, its best value, step), for the note on the commit."""
        best = self.best()
        if best is None or not best.primary_metric:
            return None
        return best.primary_metric["name"], best.primary_metric_value(), best.step

    def is_pending(self, checkpoint: CheckpointRecord) -> bool:
        """Whether this process is still writing the checkpoint's files (see the API's)."""
        return False

    def is_running(self) -> bool:
        if self._alive is not None:
            return self._alive
        return self._project is not None and self._project.is_running(self.id)

    @property
    def command_line(self) -> str | None:
        """How to run it again: the interpreter's command line (ours), else Keepsake's command."""
        value = self._extra.get(COMMAND_LINE_FIELD)
        return value if isinstance(value, str) and value else self.command

    def status(self) -> str:
        """ "running", "stopped", or "not uploaded" (see `uploaded`)."""
        if not self.uploaded:
            return "not uploaded"
        return "running" if self.is_running() else "stopped"

    @property
    def duration(self) -> dt.timedelta | None:
        """Time from start to the latest checkpoint (None without checkpoints), as Keepsake."""
        latest = self.latest()
        return None if latest is None else latest.created - self.created

    # --- the format ---

    @classmethod
    def from_json(
        cls,
        project: Any,
        data: dict[str, Any],
        lazy: Callable[[], dict[str, Any]] | None = None,
    ):
        """An experiment from its JSON; with `lazy`, `data` is a summary and the checkpoints
        (and packages, if the summary lacks them) are read by calling it, on first use:
        listings build thousands of experiments and look at few checkpoints."""
        known = _EXPERIMENT_FIELDS
        created_text = data.get("created") or ""
        extra = {k: v for k, v in data.items() if k not in known}
        make = cls.checkpoint_type.from_json
        experiment = cls(
            project,
            id=data["id"],
            created=metadata.parse_time(created_text),
            user=data.get("user"),
            host=data.get("host"),
            command=data.get("command"),
            config=data.get("config"),
            path=data.get("path") or None,
            params=metadata.from_wire(data.get("params")) or None,
            python_version=data.get("python_version"),
            python_packages=data.get("python_packages"),
            keepsake_version=data.get("keepsake_version"),
            checkpoints=() if lazy else [make(c) for c in data.get("checkpoints") or ()],
            git=GitInfo.from_json(extra.pop(GIT_FIELD, None)),
            extra=extra,
        )
        experiment._created_text = created_text
        if lazy is not None:
            experiment._checkpoints = None
            experiment._load_full = lazy
            experiment._packages_loaded = "python_packages" in data
        return experiment

    def head_json(self) -> dict[str, Any]:
        """The experiment's JSON without its checkpoints."""
        head = {
            "id": self.id,
            "created": self.created_text,
            "params": self.params or None,
            "host": self.host or "",
            "user": self.user or "",
            "config": self.config,
            "command": self.command or "",
            "path": self.path or "",
            "python_version": self.python_version or "",
            "python_packages": self.python_packages or None,
            "keepsake_version": self.keepsake_version or "",
        }
        if self.git is not None:
            head[GIT_FIELD] = self.git.to_json()
        head.update(self._extra)
        return head

    def to_json(self) -> dict[str, Any]:
        with self.lock:
            checkpoints = [c.to_json() for c in self.checkpoints]
        return {**self.head_json(), "checkpoints": checkpoints or None}

    def encode(self, checkpoints: Iterable[CheckpointRecord] | None = None) -> str:
        """The metadata file, byte for byte as Keepsake writes it (with `checkpoints` only,
        when given: the writer names only checkpoints whose files are stored)."""
        if checkpoints is None:
            with self.lock:
                checkpoints = list(self.checkpoints)
        texts = [metadata.encode_checkpoint(c.to_json()) for c in checkpoints]
        return metadata.encode_experiment(self.head_json(), texts)
