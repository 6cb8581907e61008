"""Reading a repository written by the original Keepsake 0.4.2 (tests/fixtures)."""

from __future__ import annotations

import json
import math

import pytest

from git_keepsake import Project, metadata

from .conftest import FIXTURES


def test_lists_three_experiments_with_typed_params(fixture_project):
    experiments = Project(directory=fixture_project).experiments.list()
    assert [e.short_id() for e in experiments] == ["b60bf65", "7965516", "3f8a508"]
    params = experiments[0].params
    assert params == {
        "flag": True,
        "layers": [64, 32],
        "learning_rate": 0.01,
        "nested": {"a": 1},
        "none": None,
        "optimizer": "adam",
        "seed": 1,
    }
    assert isinstance(params["learning_rate"], float) and isinstance(params["seed"], int)
    assert experiments[2].params is None and experiments[2].checkpoints == []
    assert experiments[2].path == "train.py"


def test_best_checkpoint_of_b60bf65_is_step_2(fixture_project):
    experiment = Project(directory=fixture_project).experiments.get("b60bf65")
    assert experiment.best().step == 2
    assert experiment.best().short_id() == "4ed2649"
    assert experiment.latest().step == 10
    latest = experiment.latest().metrics
    assert math.isnan(latest["loss"]) and latest["accuracy"] == math.inf
    assert latest["neg"] == -math.inf
    assert experiment.latest().primary_metric is None


def test_best_of_metric_only_experiment(fixture_project):
    experiment = Project(directory=fixture_project).experiments.get("7965516")
    assert [c.step for c in experiment.checkpoints] == [0, 1]
    assert experiment.best().step == 1  # a tie: the latest, as Keepsake 0.4.2 picks
    assert experiment.checkpoints[0].path is None


def test_nanosecond_timestamps_parse(fixture_project):
    experiment = Project(directory=fixture_project).experiments.get("b60bf65")
    assert experiment.created.isoformat() == "2026-11-22T10:26:51.817296+00:00"


def test_open_and_checkout_files_written_by_keepsake(fixture_project, tmp_path):
    project = Project(directory=fixture_project)
    best = project.experiments.get("b60bf65").best()
    assert best.open("model.pth").read() == (fixture_project / "model.pth").read_bytes()
    out = tmp_path / "out"
    step10 = project.checkpoints.get("8444cd1")
    assert step10.checkout(out, quiet=True) == ["data/weights.bin"]
    assert (out / "data" / "weights.bin").read_bytes() == (
        fixture_project / "data" / "weights.bin"
    ).read_bytes()


def test_rewriting_keepsake_metadata_is_byte_identical(fixture_project):
    project = Project(directory=fixture_project)
    for experiment in project.experiments.list():
        raw = (
            fixture_project / ".keepsake" / "metadata" / "experiments" / f"{experiment.id}.json"
        ).read_text()
        assert experiment.encode() == raw


def test_show_json_outputs_agree(fixture_project):
    """Our reading agrees with what Keepsake 0.4.2's own `show --json` printed."""
    project = Project(directory=fixture_project)
    for prefix in ("b60bf65", "7965516", "3f8a508"):
        printed = json.loads(
            (FIXTURES / "keepsake-0.4.2-outputs" / f"show-{prefix}.json").read_text()
        )
        experiment = project.experiments.get(prefix)
        assert experiment.id == printed["id"]
        assert metadata.to_wire(experiment.params or {}) == (printed.get("params") or {})
        steps = [c["step"] for c in printed.get("checkpoints") or []]
        assert [c.step for c in experiment.checkpoints] == steps


def test_newer_repository_version_is_refused(fixture_project):
    from git_keepsake.errors import IncompatibleRepository

    (fixture_project / ".keepsake" / "repository.json").write_text('{"version":2}')
    with pytest.raises(IncompatibleRepository, match="version 2"):
        Project(directory=fixture_project).experiments.list()


def test_corrupted_repository_json_is_a_clear_error(fixture_project):
    from git_keepsake.errors import CorruptRepository

    (fixture_project / ".keepsake" / "repository.json").write_text("{nope")
    with pytest.raises(CorruptRepository, match="repository.json is corrupted"):
        Project(directory=fixture_project).experiments.list()
