"""The minimal `git keepsake ls` and the CLI's error handling."""

from __future__ import annotations

import json

import git_keepsake as keepsake
from git_keepsake.cli import main


def test_ls_lists_experiments_with_differing_params(project, capsys):
    for lr in (0.1, 0.01):
        experiment = keepsake.init(params={"lr": lr, "same": 1})
        experiment.checkpoint(metrics={"loss": lr}, primary_metric=("loss", "minimize"))
        experiment.stop()
    capsys.readouterr()
    assert main(["ls"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["EXPERIMENT", "STARTED", "STATUS"]
    assert "lr=0.1" in lines[1] and "same=" not in lines[1]
    assert "stopped" in lines[1] and "loss: 0.01" in lines[2]


def test_ls_json_and_quiet(project, capsys):
    experiment = keepsake.init(params={"x": float("nan")})
    experiment.stop()
    capsys.readouterr()
    assert main(["ls", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["id"] == experiment.id and row["params"] == {"x": "[NaN]"}
    assert main(["ls", "-q"]) == 0
    assert capsys.readouterr().out == experiment.id + "\n"


def test_errors_are_one_line_with_a_hint_and_exit_1(project, capsys):
    (project / "keepsake.yaml").write_text("nonsense: 1\n")
    assert main(["ls"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: ") and "keepsake.yaml" in err[0]
    assert err[1].startswith("hint: ")
