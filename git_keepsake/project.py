"""The API's Project (Keepsake's name): a Workspace whose experiments are the API's, with
`project.experiments` and `project.checkpoints`."""

from __future__ import annotations

import os

from .checkpoint import CheckpointCollection
from .experiment import Experiment, ExperimentCollection
from .workspace import Workspace


class Project(Workspace):
    """A codebase and the repository its experiments are recorded in.

    Nothing is resolved until first used, so constructing one never fails or touches disk.
    `debug` is accepted for Keepsake's signature and ignored: it made Keepsake's daemon log
    verbosely, and there is no daemon here.
    """

    experiment_type = Experiment

    def __init__(
        self,
        repository: str | None = None,
        directory: str | os.PathLike | None = None,
        debug: bool = False,
    ):
        super().__init__(repository, directory)

    @property
    def experiments(self) -> ExperimentCollection:
        return ExperimentCollection(self)

    @property
    def checkpoints(self) -> CheckpointCollection:
        return CheckpointCollection(self)
