"""Bad input raises a clear InvalidArgument before anything is written: no orphan experiment."""

from __future__ import annotations

import pytest

import git_keepsake as keepsake
from git_keepsake.errors import InvalidArgument


def repository_files(project):
    repo = project / ".keepsake"
    return sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    "params, message",
    [
        ({"f": object()}, r"params\['f'\] is not JSON-representable"),
        ({"f": {1, 2}}, "not JSON-representable"),
        ({1: "x"}, "key that is not a string"),
        ({"nested": {2: "x"}}, "key that is not a string"),
        ([("lr", 1)], "params must be a dict"),
        ("lr=1", "params must be a dict"),
    ],
)
def test_bad_params_raise_and_write_nothing(project, params, message):
    with pytest.raises(InvalidArgument, match=message):
        keepsake.init(params=params)
    assert not (project / ".keepsake").exists()


@pytest.mark.parametrize(
    "path, message",
    [
        ("missing.pth", "does not exist"),
        ("../outside.txt", "outside the project"),
        ("/etc/passwd", "outside the project"),
        ("", "must not be empty"),
        (123, "path must be a string"),
    ],
)
def test_bad_init_path_raises_and_writes_nothing(project, path, message):
    (project.parent / "outside.txt").write_text("x")
    with pytest.raises(InvalidArgument, match=message):
        keepsake.init(path=path)
    assert not (project / ".keepsake").exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"path": "missing.pth"}, "does not exist"),
        ({"path": "../outside.txt"}, "outside the project"),
        ({"step": -1}, "must not be negative"),
        ({"step": 1.5}, "step must be an integer"),
        ({"step": "3"}, "step must be an integer"),
        ({"step": True}, "step must be an integer"),
        ({"metrics": {"loss": object()}}, "not JSON-representable"),
        ({"metrics": {0: 1.0}}, "key that is not a string"),
        ({"metrics": [1.0]}, "metrics must be a dict"),
        ({"metrics": {"loss": 1}, "primary_metric": "loss"}, "must be a .name, goal. pair"),
        ({"metrics": {"loss": 1}, "primary_metric": ("loss",)}, "must be a .name, goal. pair"),
        ({"metrics": {"loss": 1}, "primary_metric": ("loss", "min")}, "'minimize' or 'maximize'"),
        ({"metrics": {"loss": 1}, "primary_metric": ("acc", "maximize")}, "not one of the metrics"),
        ({"primary_metric": ("loss", "minimize")}, "not one of the metrics"),
        ({"metrics": {"loss": 1}, "primary_metric": (1, "minimize")}, "name must be a string"),
    ],
)
def test_bad_checkpoint_raises_and_writes_no_checkpoint(project, kwargs, message):
    (project.parent / "outside.txt").write_text("x")
    experiment = keepsake.init(disable_heartbeat=True)
    experiment.flush()
    before = repository_files(project)
    with pytest.raises(InvalidArgument, match=message):
        experiment.checkpoint(**kwargs)
    experiment.flush()
    assert repository_files(project) == before
    assert experiment.checkpoints == []
    experiment.stop()


def test_invalid_argument_is_also_a_value_error(project):
    with pytest.raises(ValueError):
        keepsake.init(params={"x": object()})


def test_goal_is_case_insensitive_and_stored_lowercase(project):
    experiment = keepsake.init()
    chk = experiment.checkpoint(metrics={"acc": 1.0}, primary_metric=("acc", "Maximize"))
    assert chk.primary_metric == {"name": "acc", "goal": "maximize"}
    experiment.stop()


def test_path_is_relative_to_project_not_cwd(project, monkeypatch):
    (project / "keepsake.yaml").write_text('repository: "file://.keepsake"\n')
    (project / "src").mkdir()
    (project / "model.pth").write_bytes(b"w")
    monkeypatch.chdir(project / "src")
    experiment = keepsake.init()
    chk = experiment.checkpoint(path="model.pth", quiet=True)
    assert chk.path == "model.pth"
    experiment.stop()
    assert (project / ".keepsake" / "checkpoints" / f"{chk.id}.tar.gz").is_file()
