"""The recording process reads its own live experiments before the writer has written them."""

from __future__ import annotations

import git_keepsake as keepsake
from git_keepsake.project import Project

from .conftest import git


def test_list_and_get_see_the_experiment_just_started_with_its_params(git_project):
    experiment = keepsake.init(params={"lr": 0.1})
    listed = keepsake.experiments.list()
    assert [e.id for e in listed] == [experiment.id]
    got = keepsake.experiments.get(experiment.id[:7])
    assert got.id == experiment.id
    assert got.params == {"lr": 0.1}
    assert got.is_running() is True
    assert got.status() == "running"


def test_get_sees_a_checkpoint_at_once_with_best_and_latest(git_project):
    experiment = keepsake.init()
    first = experiment.checkpoint(metrics={"loss": 2.0}, primary_metric=("loss", "minimize"))
    second = experiment.checkpoint(metrics={"loss": 3.0}, primary_metric=("loss", "minimize"))
    got = keepsake.experiments.get(experiment.id)
    assert [c.id for c in got.checkpoints] == [first.id, second.id]
    assert got.checkpoints[1].metrics == {"loss": 3.0}
    assert got.latest().id == second.id
    assert got.best().id == first.id
    listed = keepsake.experiments.list()
    assert [len(e.checkpoints) for e in listed] == [2]


def test_a_read_is_a_copy_that_cannot_change_the_recording(git_project):
    experiment = keepsake.init(params={"lr": 0.1})
    experiment.checkpoint(metrics={"loss": 1.0})
    got = keepsake.experiments.get(experiment.id)
    got.checkpoints.clear()
    got.params["lr"] = 9
    assert len(experiment.checkpoints) == 1
    assert experiment.params == {"lr": 0.1}


def test_a_project_in_another_folder_does_not_see_it(git_project, tmp_path):
    keepsake.init()
    other = tmp_path / "other"
    other.mkdir()
    git("init", "-q", cwd=other)
    assert Project(directory=other).experiments.list() == []


def test_stopped_experiment_reads_back_stopped_from_storage(git_project):
    experiment = keepsake.init()
    experiment.checkpoint(metrics={"loss": 1.0})
    experiment.stop()
    got = keepsake.experiments.get(experiment.id)
    assert got.status() == "stopped"
    assert len(got.checkpoints) == 1
