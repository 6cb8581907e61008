"""Experiment / ExperimentList: init, checkpoint, stop, best/latest, reading experiments back."""

from __future__ import annotations

import atexit
import datetime as dt
import getpass
import operator
import os
import platform
import shlex
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import metadata
from .checkpoint import Checkpoint, CheckpointList
from .errors import BucketNotFound, InvalidArgument, KeepsakeError, StorageError
from .heartbeat import is_alive
from .writer import (
    MetadataJob,
    RecoveryJob,
    TarballJob,
    interrupted_at_exit,
    strict,
    warn,
)

# Experiment refs are packed once this many are loose: listing 10,000 loose refs is 5-20x slower.
LOOSE_REFS_TO_PACK = 512

if TYPE_CHECKING:
    from .git.repo import GitRepo
    from .project import Project


class Experiment:
    """One run of a training script: its code, params and environment, and its checkpoints."""

    def __init__(
        self,
        project: Project,
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
        checkpoints: Iterable[Checkpoint] = (),
        extra: dict[str, Any] | None = None,
    ):
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
        self._checkpoints: CheckpointList | None = None
        # For experiments from a listing: reads the full metadata, for what the summary lacks.
        self._load_full: Callable[[], dict[str, Any]] | None = None
        self._packages_loaded = True
        self._summary: dict[str, Checkpoint | None] | None = None  # best/latest, from the index
        self._count: int | None = None  # number of checkpoints, from the index
        self._extra = extra or {}
        self._created_text: str | None = None
        self._lock = threading.Lock()
        self._set_checkpoints(checkpoints)
        self._step = max((c.step for c in self.checkpoints if c.step is not None), default=-1)
        self._git: GitRepo | None = None  # set in the process that records it into git
        self._git_metadata: str | None = None  # the metadata commit this process wrote last
        self._note_due = False  # the note on HEAD should be (re)written with the next metadata
        self._encoded: dict[str, str] = {}  # checkpoint id -> its JSON text, encoded once
        self._running_here = False  # started by this process and not stopped yet
        self._alive: bool | None = None  # heartbeat status read by a listing, all at once

    def __repr__(self) -> str:
        return f"Experiment(id={self.id!r}, params={self.params!r})"

    @property
    def checkpoints(self) -> CheckpointList:
        """All checkpoints, oldest first (read on first use for experiments from a listing)."""
        if self._checkpoints is None:
            self._read_full()
        return self._checkpoints

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
            self._set_checkpoints(Checkpoint.from_json(c) for c in data.get("checkpoints") or ())
        if not self._packages_loaded:
            self.python_packages = data.get("python_packages")

    @checkpoints.setter
    def checkpoints(self, value: Iterable[Checkpoint]) -> None:
        self._set_checkpoints(value)

    def _set_checkpoints(self, checkpoints: Iterable[Checkpoint]) -> None:
        self._checkpoints = CheckpointList(checkpoints)
        self._summary = None
        for chk in self._checkpoints:
            chk._experiment = self

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Experiment) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __enter__(self) -> Experiment:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def short_id(self) -> str:
        return self.id[: metadata.SHORT_ID_LENGTH]

    # --- recording ---

    def checkpoint(
        self,
        path: str | os.PathLike | None = None,
        step: int | None = None,
        metrics: dict[str, Any] | None = None,
        primary_metric: tuple[str, str] | None = None,
        quiet: bool = False,
    ) -> Checkpoint:
        """Record metrics and a snapshot of `path` (a file or folder, project-relative).

        Returns once the files are copied to a local staging folder: compression and the write
        to the repository happen in the background (see `flush()`).
        """
        metrics = _check_map(metrics, "metrics")
        primary = _check_primary_metric(primary_metric, metrics)
        step = self._step + 1 if step is None else _check_step(step)
        project = self._project
        rel, files = _snapshot_files(project, path, "checkpoint")
        project.writer.raise_errors()

        checkpoint = Checkpoint(
            id=metadata.new_id(),
            created=metadata.now(),
            path=rel,
            step=step,
            metrics=metrics,
            primary_metric=primary,
        )
        checkpoint._experiment = self
        self._step = step
        if files is not None:
            checkpoint._stored = False
            staged = _stage(project, checkpoint.id, files, "checkpoints", self.id)
            if staged is None:
                files = None  # warned; the metrics are still worth keeping
        with self._lock:
            self.checkpoints.append(checkpoint)
        text = self._encoded[checkpoint.id] = metadata.encode_checkpoint(checkpoint.to_json())
        _journal(lambda: project.writer.journal_checkpoint(self.id, text), checkpoint)
        if files is not None:
            project.writer.submit(
                TarballJob("checkpoints", checkpoint.id, staged, files, checkpoint._mark_stored)
            )
        project.writer.submit(MetadataJob(self))
        if not quiet:
            what = f"copied '{rel}', " if rel else ""
            print(
                f"git-keepsake: checkpoint {checkpoint.short_id()} (step {step}): {what}"
                f"metrics {_brief(metrics)}",
                file=sys.stderr,
            )
        return checkpoint

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything recorded so far is written to the repository; False if
        `timeout` seconds passed first (the writes go on in the background)."""
        done = self._project.writer.flush(timeout)
        self._project.writer.raise_errors()
        return done

    def stop(self) -> None:
        """Mark the experiment stopped (at once, unlike Keepsake's 30 s) and wait for its writes."""
        if self._running_here:
            self._running_here = False
            _running.discard(self)
            if self._git is not None:
                self._note_due = True  # the note on HEAD gets the final best metric
                self._project.writer.submit(MetadataJob(self))
            try:
                if self._project.writer.flush() and not self._project.writer.failed:
                    self._project.writer.forget(self.id)  # all written: nothing to recover
            finally:
                self._project.heartbeat.remove(self.id)
        self._project.writer.raise_errors()

    # --- reading ---

    def latest(self) -> Checkpoint | None:
        if self._summary is not None:
            return self._summary["latest"]
        return self.checkpoints[-1] if self.checkpoints else None

    def best(self) -> Checkpoint | None:
        """The checkpoint with the best primary metric; missing and NaN values are ignored."""
        if self._summary is not None:
            return self._summary["best"]
        candidates = [c for c in self.checkpoints if c.primary_metric_value() is not None]
        if not candidates:
            return None
        goal = candidates[0].primary_metric.get("goal", "minimize")
        sign = -1.0 if goal == "minimize" else 1.0
        # Of equals, the latest checkpoint wins, as in Keepsake 0.4.2 (max() keeps the first).
        return max(reversed(candidates), key=lambda c: sign * c.primary_metric_value())

    def primary_metric(self) -> str:
        return self.checkpoints.primary_metric()

    def representative(self) -> tuple[Checkpoint | None, str | None]:
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

    def is_running(self) -> bool:
        if self._running_here:
            return True
        if self._alive is not None:
            return self._alive
        try:
            return is_alive(self._project.repository.read_heartbeat(self.id))
        except KeepsakeError:
            return False

    @property
    def duration(self) -> dt.timedelta | None:
        """Time from start to the latest checkpoint (None without checkpoints), as Keepsake."""
        latest = self.latest()
        return None if latest is None else latest.created - self.created

    def plot(self, metric: str | None = None, logy: bool = False, plot_only: bool = False):
        """Plot a metric (default: the primary one) against step, with matplotlib."""
        import matplotlib.pyplot as plt

        metric = metric or self.primary_metric()
        values = [(c.metrics or {}).get(metric) for c in self.checkpoints]
        plt.plot(self.checkpoints.step, values, label=self.short_id())
        if not plot_only:
            plt.xlabel("step")
            plt.ylabel(metric)
            plt.legend(bbox_to_anchor=(1, 1))
            if logy:
                plt.yscale("log")

    # --- the format ---

    @classmethod
    def from_json(
        cls,
        project: Project,
        data: dict[str, Any],
        lazy: Callable[[], dict[str, Any]] | None = None,
    ) -> Experiment:
        """An experiment from its JSON; with `lazy`, `data` is a summary and the checkpoints
        (and packages, if the summary lacks them) are read by calling it, on first use:
        listings build thousands of experiments and look at few checkpoints."""
        known = set(metadata.EXPERIMENT_FIELDS)
        created_text = data.get("created") or ""
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
            checkpoints=()
            if lazy
            else [Checkpoint.from_json(c) for c in data.get("checkpoints") or ()],
            extra={k: v for k, v in data.items() if k not in known},
        )
        experiment._created_text = created_text
        if lazy is not None:
            experiment._checkpoints = None
            experiment._load_full = lazy
            experiment._packages_loaded = "python_packages" in data
        return experiment

    def _head_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created": self._created_text or metadata.format_time(self.created),
            "params": self.params or None,
            "host": self.host or "",
            "user": self.user or "",
            "config": self.config,
            "command": self.command or "",
            "path": self.path or "",
            "python_version": self.python_version or "",
            "python_packages": self.python_packages or None,
            "keepsake_version": self.keepsake_version or "",
            **self._extra,
        }

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            checkpoints = [c.to_json() for c in self.checkpoints]
        return {**self._head_json(), "checkpoints": checkpoints or None}

    def _stored_json(self) -> str:
        """The metadata file, naming only checkpoints whose files are already in the repository."""
        with self._lock:
            checkpoints = [c for c in self.checkpoints if c._stored]
        texts = []
        for chk in checkpoints:
            text = self._encoded.get(chk.id)
            if text is None:
                text = self._encoded[chk.id] = metadata.encode_checkpoint(chk.to_json())
            texts.append(text)
        return metadata.encode_experiment(self._head_json(), texts)

    def _record_in_git(self, text: str) -> None:
        """Called by the writer after the blob-storage JSON: the same bytes go to git, and the
        note on HEAD is refreshed when due. A failure warns; the blob storage copy stands."""
        git, info = self._git, self._extra.get("git") or {}
        if git is None:
            return
        from .git.repo import RefMoved

        try:
            first = self._git_metadata is None
            self._git_metadata = git.write_metadata(
                self.id, info["snapshot"], text.encode(), self._git_metadata, time.time()
            )
            if first and git.loose_ref_count() > LOOSE_REFS_TO_PACK:
                git.pack_refs()
            if self._note_due and info.get("commit"):
                self._note_due = False
                git.update_note(info["commit"], self.id, self._note_line())
        except RefMoved as e:
            self._git = None  # deleted (git keepsake rm): do not bring it back
            warn(f"experiment {self.short_id()} is no longer recorded in git: {e.message}")
        except KeepsakeError as e:
            if strict():
                raise
            warn(f"could not record experiment {self.short_id()} in git: {e.message}")

    def _note_line(self) -> str:
        from .git.notes import format_note_line

        best = self.best()
        summary = None
        if best is not None and best.primary_metric:
            summary = (best.primary_metric["name"], best.primary_metric_value(), best.step)
        return format_note_line(self.id, self.params, summary)


class ExperimentList(list):
    """Experiments, oldest first; slicing keeps the type."""

    def __getitem__(self, key):
        if isinstance(key, slice):
            return ExperimentList(super().__getitem__(key))
        return super().__getitem__(key)

    def primary_metric(self) -> str:
        names = {c.primary_metric["name"] for e in self for c in e.checkpoints if c.primary_metric}
        if len(names) != 1:
            raise ValueError(
                "these experiments have no primary metric"
                if not names
                else f"these experiments have different primary metrics: {sorted(names)}"
            )
        return names.pop()

    def plot(self, metric: str | None = None, logy: bool = False):
        import matplotlib.pyplot as plt

        metric = metric or self.primary_metric()
        for experiment in self:
            experiment.plot(metric, plot_only=True)
        plt.legend(bbox_to_anchor=(1, 1))
        plt.xlabel("step")
        plt.ylabel(metric)
        if logy:
            plt.yscale("log")


class ExperimentCollection:
    """`project.experiments`: create, list and get experiments."""

    def __init__(self, project: Project):
        self.project = project

    def create(
        self,
        path: str | os.PathLike | None = None,
        params: dict[str, Any] | None = None,
        quiet: bool = False,
        disable_heartbeat: bool = False,
    ) -> Experiment:
        """Start an experiment: validate everything first, so a bad call leaves nothing behind."""
        from . import __version__

        project = self.project
        params = _check_map(params, "params")
        rel, files = _snapshot_files(project, path, "experiment")
        repository = project.repository
        _check_repository(repository)

        experiment = Experiment(
            project,
            id=metadata.new_id(),
            created=metadata.now(),
            user=_user(),
            host=socket.gethostname(),
            command=_command(),
            config={"repository": repository.url, "storage": ""},
            path=rel,
            params=params,
            python_version=platform.python_version(),
            python_packages=imported_packages(),
            keepsake_version=__version__,
        )
        project.keep_repository_out_of_git()
        _snapshot_in_git(project, experiment, rel, files, quiet)
        head = metadata.encode_experiment(experiment._head_json(), [])
        _journal(lambda: project.writer.journal_experiment(experiment.id, head), experiment)
        if files is not None:
            staged = _stage(project, experiment.id, files, "experiments", experiment.id)
            if staged is not None:
                project.writer.submit(TarballJob("experiments", experiment.id, staged, files))
        project.writer.submit(MetadataJob(experiment))
        project.writer.submit(RecoveryJob(lambda: _recover(project)))
        experiment._running_here = True
        _running.add(experiment)
        if not disable_heartbeat:
            project.heartbeat.add(experiment.id)
        if not quiet:
            what = f", snapshot of '{rel}'" if rel else ""
            print(
                f"git-keepsake: experiment {experiment.short_id()} started{what}, "
                f"recording to {repository.url}",
                file=sys.stderr,
            )
        return experiment

    def list(self, filter: Callable[[Experiment], bool] | None = None) -> ExperimentList:
        """All experiments, oldest first; `filter` keeps those it returns True for."""
        experiments = self.project.catalog.list()
        if filter is not None:
            experiments = [e for e in experiments if filter(e)]
        return ExperimentList(sorted(experiments, key=lambda e: e.created))

    def get(self, id_or_prefix: str) -> Experiment:
        """The experiment whose ID starts with `id_or_prefix` (any unambiguous prefix)."""
        return self.project.catalog.get(id_or_prefix)


# --- validation: raise InvalidArgument before anything is written ---


def _check_repository(repository) -> None:
    """Refuse a repository of a newer format at once. A missing bucket is made by the first
    write; an unreachable or refused one warns and training goes on (writes are retried)."""
    try:
        repository.check_version()
    except BucketNotFound:
        pass
    except StorageError as e:
        if strict():
            raise
        warn(f"{e}; training goes on")


def _check_map(value: Any, name: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidArgument(
            f"{name} must be a dict, not {type(value).__name__}",
            hint=f'e.g. {name}={{"learning_rate": 0.01}}' if name == "params" else None,
        )
    converted = metadata.to_json_value(value, name)
    return converted or None


def _check_step(step: Any) -> int:
    if isinstance(step, bool):
        raise InvalidArgument(f"step must be an integer, not {step!r}")
    try:
        step = operator.index(step)  # int, numpy and torch integers; not 1.5 or "3"
    except TypeError:
        raise InvalidArgument(
            f"step must be an integer, not {type(step).__name__} {step!r}",
            hint="e.g. step=epoch",
        ) from None
    if step < 0:
        raise InvalidArgument(f"step must not be negative, got {step}")
    return step


def _check_primary_metric(value: Any, metrics: dict[str, Any] | None) -> dict[str, str] | None:
    if value is None:
        return None
    example = 'e.g. primary_metric=("loss", "minimize")'
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise InvalidArgument(
            f"primary_metric must be a (name, goal) pair, not {value!r}", hint=example
        )
    name, goal = value
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"primary_metric name must be a string, not {name!r}", hint=example)
    if not isinstance(goal, str) or goal.lower() not in metadata.GOALS:
        raise InvalidArgument(
            f"primary_metric goal must be 'minimize' or 'maximize', not {goal!r}", hint=example
        )
    if not metrics or name not in metrics:
        raise InvalidArgument(
            f"primary_metric {name!r} is not one of the metrics "
            f"({', '.join(sorted(metrics or {})) or 'none given'})",
            hint="pass its value in metrics= too",
        )
    return {"name": name, "goal": goal.lower()}


def _snapshot_files(project: Project, path: Any, what: str) -> tuple[str | None, list[str] | None]:
    """(project-relative path, files to snapshot), or (None, None) when there is no path."""
    if path is None:
        return None, None
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidArgument(f"path must be a string, not {type(path).__name__}")
    path = os.fspath(path)
    if path == "":
        raise InvalidArgument(
            "path must not be empty", hint="use path=None to save no files, or path='.' for all"
        )
    directory = project.directory
    full = Path(os.path.normpath(directory / path))
    if full != directory and directory not in full.parents:
        raise InvalidArgument(
            f"the {what} path {path!r} is outside the project directory {directory}",
            hint="paths are relative to the project directory (where keepsake.yaml is)",
        )
    if not full.exists():
        hint = "paths are relative to the project directory"
        if Path(path).exists() and Path.cwd().resolve() != directory:
            hint += f" ({directory}), not the current directory"
        raise InvalidArgument(f"the {what} path {path!r} does not exist", hint=hint)
    rel = full.relative_to(directory).as_posix() if full != directory else "."
    if full.is_file():
        return rel, [rel]
    return rel, project.snapshot_files(rel)


def _snapshot_in_git(
    project: Project, experiment: Experiment, rel: str | None, files: list[str] | None, quiet: bool
) -> None:
    """Record the code as a snapshot commit under refs/keepsake/experiments/<id> (in git only)."""
    git = project.git
    if git is None:
        return
    from .git.repo import GitError

    message = f"keepsake: experiment {experiment.short_id()}"
    message += f" (snapshot of '{rel}')\n" if rel else " (no snapshot path)\n"
    if experiment.params:
        message += "\n" + "\n".join(f"{k}: {v!r}" for k, v in experiment.params.items()) + "\n"
    limit = project.git_max_file_size
    try:
        snapshot = git.snapshot(
            experiment.id, rel, files or [], message, experiment.created.timestamp(), limit
        )
        remote = git.remote_url()
    except GitError as e:
        if strict():
            raise
        warn(f"could not record experiment {experiment.short_id()} in git: {e.message}")
        return
    experiment._git = git
    experiment._note_due = True
    experiment._extra["git"] = {
        "commit": snapshot.head,
        "branch": snapshot.branch,
        "dirty": snapshot.dirty,
        "snapshot": snapshot.commit,
        "remote": remote,
    }
    if snapshot.left_out and not quiet:
        shown = ", ".join(snapshot.left_out[:5]) + (", ..." if len(snapshot.left_out) > 5 else "")
        print(
            f"git-keepsake: {len(snapshot.left_out)} untracked file(s) over "
            f"{limit / 1e6:g} MB left out of the git snapshot (they are in the experiment's "
            f"tarball; set git_max_file_size in keepsake.yaml to change): {shown}",
            file=sys.stderr,
        )


def _recover(project: Project) -> None:
    """At init(): finish what earlier runs of the project left staged (they ended first)."""
    from .recovery import recover

    for done in recover(project):
        print(f"git-keepsake: finished an earlier run's writes: {done.describe()}", file=sys.stderr)


def _journal(write: Callable[[], None], what: Experiment | Checkpoint) -> None:
    """Keep what recovery needs if this process dies before its writes are done; a failure
    warns (or raises when strict)."""
    try:
        write()
    except OSError as e:
        kind = "experiment" if isinstance(what, Experiment) else "checkpoint"
        message = f"could not journal {kind} {what.short_id()}: {e}"
        if strict():
            raise KeepsakeError(message) from e
        warn(message + "; it is lost if this process is killed before it is written")


def _stage(project: Project, object_id: str, files: list[str], kind: str, experiment_id: str):
    """Copy files to staging; a failure warns (or raises when strict) and returns None."""
    try:
        return project.writer.stage(
            object_id,
            project.directory,
            files,
            {"kind": kind, "id": object_id, "experiment_id": experiment_id},
        )
    except OSError as e:
        message = f"could not stage {kind[:-1]} {object_id[:7]} files: {e}"
        if strict():
            raise KeepsakeError(message) from e
        warn(message + "; training goes on without them")
        return None


def _brief(metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return "none"
    items = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()]
    text = ", ".join(items)
    return text if len(text) <= 80 else text[:77] + "..."


def _command() -> str:
    """How this run was started, to paste back into a shell. Keepsake recorded sys.argv,
    which for `python train.py` is just "train.py" and for `python -c ...` just "-c"; with a
    script or -c, the interpreter's own command line says it (`accelerate launch x.py` and
    other console scripts are their own argv[0]: kept)."""
    argv = sys.argv
    if argv and (argv[0] in ("-c", "") or argv[0].endswith(".py")):
        argv = getattr(sys, "orig_argv", argv)
    return " ".join(map(shlex.quote, argv))


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return os.environ.get("USER", "")


def imported_packages() -> dict[str, str]:
    """{name: version} of installed distributions whose module is imported, as Keepsake records."""
    from importlib import metadata as importlib_metadata

    loaded = {name.split(".")[0].lower() for name in list(sys.modules)}
    packages = {}
    for dist in importlib_metadata.distributions():
        name = dist.metadata["Name"] or ""
        if name.lower() in loaded or name.lower().replace("-", "_") in loaded:
            packages[name] = dist.version
    return packages


# Experiments this process started and has not stopped: stopped (and flushed) at exit.
_running: set[Experiment] = set()


def _stop_all_at_exit() -> None:
    for experiment in list(_running):
        try:
            experiment.stop()
        except KeyboardInterrupt:  # Ctrl-C while exit waits on storage: go, leave it staged
            interrupted_at_exit()
            return
        except Exception as e:  # exit must not turn into a traceback
            warn(str(e))


atexit.register(_stop_all_at_exit)
os.register_at_fork(after_in_child=_running.clear)  # the parent's runs: it stops them
