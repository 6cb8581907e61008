"""git-keepsake: version control for machine-learning experiments, native to git.

The API is Keepsake's, name for name: `import git_keepsake as keepsake`.
"""

from __future__ import annotations

import os
from typing import Any

from .checkpoint import Checkpoint, CheckpointList
from .errors import KeepsakeError
from .experiment import Experiment, ExperimentList
from .project import Project

__version__ = "0.1.0"


class _CurrentDirectoryProject:
    """`keepsake.experiments` / `keepsake.checkpoints`: the project of the current directory,
    found anew on each call (a notebook may chdir between calls)."""

    def __init__(self, attribute: str):
        self._attribute = attribute

    def __getattr__(self, name: str):
        return getattr(getattr(Project(), self._attribute), name)


default_project = Project()
experiments = _CurrentDirectoryProject("experiments")
checkpoints = _CurrentDirectoryProject("checkpoints")


def init(
    path: str | os.PathLike | None = None,
    params: dict[str, Any] | None = None,
    disable_heartbeat: bool = False,
) -> Experiment:
    """Start recording an experiment: `path` is snapshotted now, `params` saved with it.

    Example:
        experiment = keepsake.init(path=".", params={"learning_rate": 0.01})
    """
    return Project().experiments.create(
        path=path, params=params, disable_heartbeat=disable_heartbeat
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
    "experiments",
    "init",
    "__version__",
]
