"""The API's Experiment and ExperimentList (Keepsake's names): the data of `records`, plus
recording (`checkpoint()`, `flush()`, `stop()`) and plotting."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import recording, runtime
from .catalog import check_prefix
from .checkpoint import Checkpoint, CheckpointList
from .errors import Ambiguous, NotFound
from .records import CheckpointRecord, ExperimentRecord
from .runtime import never_breaks_training

if TYPE_CHECKING:
    from .store.publish import Recording
    from .workspace import Workspace


class Experiment(ExperimentRecord):
    """One run of a training script: its code, params and environment, and its checkpoints."""

    checkpoint_type = Checkpoint
    list_type = CheckpointList

    _recording: Recording | None = None  # set when this process records into it

    def __enter__(self) -> Experiment:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def project(self) -> Workspace:
        return self._project

    # --- recording ---

    @classmethod
    def start(
        cls,
        workspace: Workspace,
        path: str | os.PathLike | None = None,
        params: dict[str, Any] | None = None,
        quiet: bool = False,
        disable_heartbeat: bool = False,
    ) -> Experiment:
        experiment, rec = recording.start_experiment(
            workspace, path, params, quiet, disable_heartbeat
        )
        assert isinstance(experiment, Experiment)
        experiment._recording = rec
        runtime.running.add(experiment)
        return experiment

    @never_breaks_training
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
        if self._recording is None:  # read from the repository, not started here
            self._recording = recording.resume(self, self._project)
        checkpoint = recording.record_checkpoint(
            self._recording, self._project, path, step, metrics, primary_metric, quiet
        )
        assert isinstance(checkpoint, Checkpoint)
        return checkpoint

    @never_breaks_training
    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything recorded so far is written to the repository; False if
        `timeout` seconds passed first (the writes go on in the background)."""
        done = self._project.writer.flush(timeout)
        self._project.writer.raise_errors()
        return done

    @never_breaks_training
    def stop(self) -> None:
        """Mark the experiment stopped (at once, unlike Keepsake's 30 s) and wait for its writes.

        Ctrl-C ends the wait (an outage can make it long) with one line, and stop() returns:
        what is not written stays staged, for the next run or `git keepsake sync`, and this
        process waits for no more writes, at exit either."""
        if self in runtime.running:
            live = next(e for e in runtime.running if e == self)  # self may be a snapshot
            assert isinstance(live, Experiment) and live._recording is not None
            try:
                # Left in `running` until flushed: this process's reads still see it meanwhile.
                recording.stop_recording(live._recording, self._project)
            except KeyboardInterrupt:
                runtime.interrupt_waiting()
                return
            finally:
                runtime.running.discard(self)
        if "writer" in vars(self._project):
            self._project.writer.raise_errors()
        self._tell_unpushed()

    def _tell_unpushed(self) -> None:
        """One line if experiments here are on no git remote yet; never fails the script."""
        from .team import unpushed_line

        try:
            dirs = self._project.git_dirs
            line = unpushed_line(dirs[1]) if dirs and self._project.is_own_repository else None
        except Exception:  # a hint only
            return
        if line:
            runtime.say(line)

    def is_running(self) -> bool:
        return self in runtime.running or super().is_running()

    def refresh(self) -> None:
        """Re-read this experiment from the repository: a notebook watching a run sees its new
        checkpoints. The process recording it has them all already, and keeps them."""
        if self in runtime.running:
            return
        fresh = self._project.catalog.get(self.id)
        checkpoints, packages = fresh.checkpoints, fresh.python_packages  # read in full
        for name, value in vars(fresh).items():
            if name not in ("_project", "lock", "_recording"):
                setattr(self, name, value)
        self.python_packages = packages
        self._set_checkpoints(checkpoints)

    def delete(self) -> None:
        """Delete this experiment, its checkpoints and their files, as `git keepsake rm` does
        (refused while it is running: its next write would bring it back)."""
        ExperimentList([self]).delete()

    def is_pending(self, checkpoint: CheckpointRecord) -> bool:
        """Whether this process is still writing the checkpoint's files."""
        return self._recording is not None and self._recording.is_pending(checkpoint.id)

    # --- plotting ---

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


class ExperimentList(list):
    """Experiments, oldest first; slicing keeps the type."""

    def __getitem__(self, key):
        if isinstance(key, slice):
            return ExperimentList(super().__getitem__(key))
        return super().__getitem__(key)

    def delete(self) -> None:
        """Delete these experiments as `git keepsake rm` does: all are checked first (unknown
        or running refuses), so a refusal deletes none."""
        from .remove import apply_removal, plan_removal

        planned = [(e._project, r) for e in self for r in plan_removal(e._project, [e.id])]
        for project, removal in planned:
            apply_removal(project, removal)

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

    def __init__(self, project: Workspace):
        self.project = project

    def create(
        self,
        path: str | os.PathLike | None = None,
        params: dict[str, Any] | None = None,
        quiet: bool = False,
        disable_heartbeat: bool = False,
    ) -> Experiment:
        """Start an experiment: validate everything first, so a bad call leaves nothing behind."""
        return Experiment.start(self.project, path, params, quiet, disable_heartbeat)

    def list(self, filter: Callable[[Experiment], bool] | None = None) -> ExperimentList:
        """All experiments, oldest first; `filter` keeps those it returns True for.

        An experiment the filter raises for is skipped with a warning, as in Keepsake, whose
        documented `lambda e: e.best().step >= 50` raises for experiments with no best yet.
        Strict mode does not raise: that is meant for failed writes, and this is expected use.
        """
        found = {e.id: e for e in self.project.catalog.list()}
        found.update(_live(self.project))  # this process's own, newer than what is written
        experiments = list(found.values())
        if filter is not None:
            experiments = [e for e in experiments if _keeps(filter, e)]
        return ExperimentList(sorted(experiments, key=lambda e: e.created))

    def get(self, id_or_prefix: str) -> Experiment:
        """The experiment whose ID starts with `id_or_prefix` (any unambiguous prefix)."""
        live = _live(self.project)
        prefix = check_prefix(id_or_prefix, "experiment")
        matches = [e for i, e in live.items() if i.startswith(prefix)]
        try:
            stored = self.project.catalog.get(id_or_prefix)
        except NotFound:
            if len(matches) != 1:
                raise
            return matches[0]
        if stored.id in live and len(matches) == 1:
            return live[stored.id]
        if matches and matches != [live.get(stored.id)]:
            raise Ambiguous(
                f"{id_or_prefix!r} matches more than one experiment",
                hint="give more characters of the ID",
            )
        return stored  # type: ignore[return-value]


def _live(project: Workspace) -> dict[str, Experiment]:
    """Snapshots of the experiments this process records into `project`'s repository: the
    background writer may not have written their metadata yet, and a script reading its own
    run must see it (Keepsake 0.4.2 wrote metadata synchronously). A copy, so a reader can't
    change what is recorded; a forked child has none (runtime forgets them)."""
    out = {}
    for live in list(runtime.running):
        if not isinstance(live, Experiment) or live._project.repository.url != (
            project.repository.url  # resolved: a relative URL names each project's own folder
        ):
            continue
        # to_json() takes the lock; its dicts are the live ones (params, metrics): copied.
        snapshot = project._build_experiment(copy.deepcopy(live.to_json()))
        assert isinstance(snapshot, Experiment)
        snapshot._recording = live._recording  # checkpoint()/is_pending() act on the run
        out[live.id] = snapshot
    return out


def _keeps(filter: Callable[[Experiment], bool], experiment) -> bool:
    try:
        return bool(filter(experiment))
    except Exception as e:
        runtime.warn(
            f"failed to apply filter to experiment {experiment.short_id()} (skipped): "
            f"{type(e).__name__}: {e}"
        )
        return False
