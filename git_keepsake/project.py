"""The API's Project (Keepsake's name): a Workspace whose experiments are the API's, with
`project.experiments` and `project.checkpoints`."""

from __future__ import annotations

from .checkpoint import CheckpointCollection
from .experiment import Experiment, ExperimentCollection
from .workspace import Workspace


class Project(Workspace):
    """A codebase and the repository its experiments are recorded in.

    Nothing is resolved until first used, so constructing one never fails or touches disk.
    """

    experiment_type = Experiment

    @property
    def experiments(self) -> ExperimentCollection:
        return ExperimentCollection(self)

    @property
    def checkpoints(self) -> CheckpointCollection:
        return CheckpointCollection(self)
