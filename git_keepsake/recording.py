"""Recording: what `init()` and `checkpoint()` do, in order. Arguments are checked first, so a bad
call leaves nothing behind; then the code is snapshotted into git, the files staged on local
disk and journaled (so a killed run loses nothing), and the background writer is given the rest.
"""

from __future__ import annotations

import getpass
import json
import operator
import os
import platform
import shlex
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import metadata
from .errors import BucketNotFound, GitError, InvalidArgument, KeepsakeError, StorageError
from .records import COMMAND_LINE_FIELD, CheckpointRecord, ExperimentRecord, GitInfo
from .runtime import say, warn_or_raise
from .store.layout import CHECKPOINTS, EXPERIMENTS, Repository
from .store.publish import Publication, Recording
from .store.writer import MetadataJob, RecoveryJob, TarballJob
from .workspace import Workspace


def start_experiment(
    workspace: Workspace,
    path: str | os.PathLike | None = None,
    params: dict[str, Any] | None = None,
    quiet: bool = False,
    disable_heartbeat: bool = False,
) -> tuple[ExperimentRecord, Recording]:
    """Start an experiment: validate everything first, so a bad call leaves nothing behind."""
    from . import __version__

    _check_process(workspace, "this project's experiments.create()")
    params = _check_map(params, "params")
    rel, files = _snapshot_files(workspace, path, "experiment")
    repository = workspace.repository
    _check_repository(repository)

    experiment = workspace.experiment_type(
        workspace,
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
        extra={COMMAND_LINE_FIELD: _command_line()},
    )
    workspace.keep_repository_out_of_git()
    experiment.git = _snapshot_in_git(workspace, experiment, rel, files, quiet)
    recording = Recording(
        experiment, Publication(repository, workspace.git, experiment.id, experiment.git)
    )
    writer = workspace.writer
    head = metadata.encode_experiment(experiment.head_json(), [])
    _journal(lambda: writer.session.journal_experiment(experiment.id, head), experiment)
    if files is not None:
        staged = _stage(workspace, experiment.id, files, EXPERIMENTS, experiment.id)
        if staged is None:
            experiment.path = None  # no code tarball: the metadata must not name one
        else:
            writer.submit(TarballJob(EXPERIMENTS, experiment.id, *staged))
    writer.submit(MetadataJob(recording))
    writer.submit(RecoveryJob(lambda: _recover(workspace)))
    if not disable_heartbeat:
        workspace.heartbeat.add(experiment.id)
    if not quiet:
        what = f", snapshot of '{rel}'" if rel else ""
        say(f"experiment {experiment.short_id()} started{what}, recording to {repository.url}")
    return experiment, recording


def resume(experiment: ExperimentRecord, workspace: Workspace) -> Recording:
    """Recording into an experiment read back from the repository (not started by this
    process's init()): its new checkpoints go to blob storage, not git (its refs are another
    process's)."""
    return Recording(experiment, Publication(workspace.repository, None, experiment.id, None))


def record_checkpoint(
    recording: Recording,
    workspace: Workspace,
    path: str | os.PathLike | None = None,
    step: int | None = None,
    metrics: dict[str, Any] | None = None,
    primary_metric: tuple[str, str] | None = None,
    quiet: bool = False,
) -> CheckpointRecord:
    """Record metrics and a snapshot of `path`: staged and journaled before this returns; the
    writer stores the tarball, then the metadata naming it."""
    experiment = recording.experiment
    _check_process(workspace, f"checkpoint() of experiment {experiment.short_id()}")
    writer = workspace.writer
    metrics = _check_map(metrics, "metrics")
    primary = _check_primary_metric(primary_metric, metrics)
    step = recording.last_step + 1 if step is None else _check_step(step)
    rel, files = _snapshot_files(workspace, path, "checkpoint")
    writer.raise_errors()

    checkpoint = experiment.checkpoint_type(
        id=metadata.new_id(),
        created=metadata.now(),
        path=rel,
        step=step,
        metrics=metrics,
        primary_metric=primary,
    )
    experiment.attach(checkpoint)
    recording.last_step = step
    staged = None
    if files is not None:
        staged = _stage(workspace, checkpoint.id, files, CHECKPOINTS, experiment.id)
        if staged is None:  # warned; the metrics are still worth keeping, without the files
            files, checkpoint.path = None, None
        else:
            staged, files = staged
    text = metadata.encode_checkpoint(checkpoint.to_json())
    recording.add(checkpoint, text, files_pending=files is not None)
    with experiment.lock:
        experiment.checkpoints.append(checkpoint)
    _journal(lambda: writer.session.journal_checkpoint(experiment.id, text), checkpoint)
    if files is not None:
        writer.submit(
            TarballJob(
                CHECKPOINTS, checkpoint.id, staged, files, lambda: recording.stored(checkpoint.id)
            )
        )
    writer.submit(MetadataJob(recording))
    if not quiet:
        what = f"copied '{rel}', " if rel else ""
        say(f"checkpoint {checkpoint.short_id()} (step {step}): {what}metrics {_brief(metrics)}")
    return checkpoint


def stop_recording(recording: Recording, workspace: Workspace) -> None:
    """The experiment is stopped: its note gets the final best metric, its writes are waited
    for, its journal goes once all is written, and its heartbeat at once."""
    writer = workspace.writer
    if recording.publication.git is not None:
        recording.note_due = True
        writer.submit(MetadataJob(recording))
    try:
        if writer.flush() and not writer.failed:
            writer.session.forget(recording.id)  # all written: nothing to recover
    finally:
        workspace.heartbeat.remove(recording.id)


# --- validation: raise InvalidArgument before anything is written ---


def _check_process(workspace: Workspace, call: str) -> None:
    """A forked child has a copy of its parent's writer, whose thread and session folder are
    the parent's: what it was given there would never be written."""
    if not workspace.writer.owned_here():
        raise InvalidArgument(
            f"{call} was called in a forked child process (pid {os.getpid()}): only the "
            "process that started it records with it",
            hint="call checkpoint() in the parent, or keepsake.init() in the child",
        )


def _check_repository(repository: Repository) -> None:
    """Refuse a repository of a newer format at once. A missing bucket is made by the first
    write; an unreachable or refused one warns and training goes on (writes are retried)."""
    try:
        repository.check_version()
    except BucketNotFound:
        pass
    except StorageError as e:
        warn_or_raise(e, "; training goes on")


def _check_map(value: Any, name: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidArgument(
            f"{name} must be a dict, not {type(value).__name__}",
            hint=f'e.g. {name}={{"learning_rate": 0.01}}' if name == "params" else None,
        )
    try:
        converted = metadata.to_json_value(value, name)
        if metadata.too_deep(converted):  # readers refuse what nests deeper
            raise RecursionError
        # What is stored is UTF-8 JSON: a lone surrogate ("\ud800") can't be written.
        json.dumps(converted, ensure_ascii=False).encode()
    except RecursionError:
        raise InvalidArgument(
            f"{name} is nested too deeply, or contains itself",
            hint="pass plain values, lists and dicts, a few levels deep",
        ) from None
    except UnicodeEncodeError as e:
        raise InvalidArgument(
            f"{name} holds a string that is not valid text ({e.object[e.start : e.end]!r})",
            hint="decode bytes with errors='replace' first",
        ) from None
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


def _snapshot_files(
    workspace: Workspace, path: Any, what: str
) -> tuple[str | None, list[str] | None]:
    """(project-relative path, files to snapshot), or (None, None) when there is no path."""
    if path is None:
        return None, None
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidArgument(f"path must be a string, not {type(path).__name__}")
    path = os.fspath(path)
    if not _is_text(path):
        raise InvalidArgument(
            f"the {what} path {path!r} is not valid UTF-8, which the repository needs",
            hint="rename the file or folder",
        )
    if path == "":
        raise InvalidArgument(
            "path must not be empty", hint="use path=None to save no files, or path='.' for all"
        )
    directory = workspace.directory
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
    return rel, workspace.snapshot_files(rel)


def _is_text(path: str) -> bool:
    """False for a name made of undecodable bytes (os.fsdecode keeps them as surrogates)."""
    try:
        path.encode()
    except UnicodeEncodeError:
        return False
    return True


# --- the steps ---


def _snapshot_in_git(
    workspace: Workspace,
    experiment: ExperimentRecord,
    rel: str | None,
    files: list[str] | None,
    quiet: bool,
) -> GitInfo | None:
    """Record the code as a snapshot commit under refs/keepsake/experiments/<id> (in git only)."""
    git = workspace.git
    if git is None:
        return None
    message = f"keepsake: experiment {experiment.short_id()}"
    message += f" (snapshot of '{rel}')\n" if rel else " (no snapshot path)\n"
    if experiment.params:
        message += "\n" + "\n".join(f"{k}: {v!r}" for k, v in experiment.params.items()) + "\n"
    limit = workspace.git_max_file_size
    try:
        snapshot = git.snapshot(
            experiment.id, rel, files or [], message, experiment.created.timestamp(), limit
        )
        remote = git.remote_url()
    except GitError as e:
        e.message = f"could not record experiment {experiment.short_id()} in git: {e.message}"
        warn_or_raise(e)
        return None
    if snapshot.left_out and not quiet:
        say(
            f"{len(snapshot.left_out)} untracked file(s) over {limit / 1e6:g} MB left out of "
            "the git snapshot (they are in the experiment's tarball; set git_max_file_size in "
            f"keepsake.yaml to change): {_some(snapshot.left_out)}"
        )
    if snapshot.unstable:  # another process rewrote or deleted them meanwhile
        say(
            f"{len(snapshot.unstable)} file(s) vanished or kept changing while they were "
            f"read, left out of the git snapshot: {_some(snapshot.unstable)}"
        )
    return GitInfo(
        commit=snapshot.head,
        branch=snapshot.branch,
        dirty=snapshot.dirty,
        snapshot=snapshot.commit,
        remote=remote,
    )


def _recover(workspace: Workspace) -> None:
    """At init(): finish what earlier runs of the project left staged (they ended first)."""
    from .recovery import recover

    for done in recover(workspace):
        say(f"finished an earlier run's writes: {done.describe()}")


def _journal(write: Callable[[], None], what: ExperimentRecord | CheckpointRecord) -> None:
    """Keep what recovery needs if this process dies before its writes are done; a failure
    warns (or raises when strict)."""
    try:
        write()
    except OSError as e:
        kind = "experiment" if isinstance(what, ExperimentRecord) else "checkpoint"
        error = KeepsakeError(f"could not journal {kind} {what.short_id()}: {e}")
        error.__cause__ = e
        warn_or_raise(error, "; it is lost if this process is killed before it is written")


def _stage(workspace: Workspace, object_id: str, files: list[str], kind: str, experiment_id: str):
    """Copy files to staging: (staged folder, files copied); files that vanished meanwhile are
    said in one line. A failure warns (or raises when strict) and returns None."""
    try:
        staged, copied = workspace.writer.session.stage(
            object_id,
            workspace.directory,
            files,
            {"kind": kind, "id": object_id, "experiment_id": experiment_id},
        )
        if len(copied) < len(files):
            gone = sorted(set(files) - set(copied))
            shown = ", ".join(gone[:5]) + (", ..." if len(gone) > 5 else "")
            say(
                f"{len(gone)} file(s) vanished while being copied, left out of {kind[:-1]} "
                f"{object_id[:7]}: {shown}"
            )
        return staged, copied
    except OSError as e:
        error = KeepsakeError(f"could not stage {kind[:-1]} {object_id[:7]} files: {e}")
        error.__cause__ = e
        warn_or_raise(error, "; training goes on without them")
        return None


def _some(paths: list[str]) -> str:
    return ", ".join(paths[:5]) + (", ..." if len(paths) > 5 else "")


def _brief(metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return "none"
    items = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()]
    text = ", ".join(items)
    return text if len(text) <= 80 else text[:77] + "..."


def _command() -> str:
    """What Keepsake 0.4.2 recorded as `command`: sys.argv, shell-quoted (`train.py --lr 0.1`)."""
    return " ".join(map(shlex.quote, sys.argv))


def _command_line() -> str:
    """The interpreter's whole command line (`/venv/bin/python -m pkg.train --lr 0.1`), which
    `command` (sys.argv) lacks for -m, -c and interpreter flags: what re-runs the experiment."""
    argv = [sys.executable, *getattr(sys, "orig_argv", [sys.executable, *sys.argv])[1:]]
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
