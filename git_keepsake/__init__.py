"""git-keepsake: version control for machine-learning experiments, native to git.

The API is Keepsake's, name for name: `import git_keepsake as keepsake`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from . import exceptions
from .errors import KeepsakeError

if TYPE_CHECKING:
    from .checkpoint import Checkpoint, CheckpointList
    from .experiment import Experiment, ExperimentList
    from .project import Project

__version__ = "0.1.0"

# Imported on first use, so `import git_keepsake` (and `git keepsake -h`, which needs only the
# version and the errors) doesn't load the recording machinery.
_LAZY = {
    "Checkpoint": "checkpoint",
    "CheckpointList": "checkpoint",
    "Experiment": "experiment",
    "ExperimentList": "experiment",
    "Project": "project",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    if name == "default_project":
        from .project import Project

        globals()[name] = value = Project()
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _CurrentDirectoryProject:
    """`keepsake.experiments` / `keepsake.checkpoints`: the project of the current directory,
    found anew on each call (a notebook may chdir between calls)."""

    def __init__(self, attribute: str):
        self._attribute = attribute

    def __getattr__(self, name: str):
        from .project import Project

        return getattr(getattr(Project(), self._attribute), name)


experiments = _CurrentDirectoryProject("experiments")
checkpoints = _CurrentDirectoryProject("checkpoints")


def init(
    path: str | os.PathLike | None = None,
    params: dict[str, Any] | None = None,
    disable_heartbeat: bool = False,
    debug: bool = False,
) -> Experiment:
    """Start recording an experiment: `path` is snapshotted now, `params` saved with it.

    `debug` is accepted for Keepsake's signature and ignored: it made Keepsake's daemon log
    verbosely, and there is no daemon here.

    Example:
        experiment = keepsake.init(path=".", params={"learning_rate": 0.01})
    """
    from .experiment import Experiment
    from .project import Project

    return Experiment.start(
        Project(debug=debug), path=path, params=params, disable_heartbeat=disable_heartbeat
    )


__all__ = [
    "Checkpoint",
    "CheckpointList",
    "Experiment",
    "ExperimentList",
    "KeepsakeError",
    "Project",
    "checkpoints",
    "default_project",
    "exceptions",
    "experiments",
    "init",
    "__version__",
]
