"""`git keepsake rm CHECKPOINT` deletes its files and keeps its metrics (Keepsake 0.4.2's delete
left the metadata alone), marked files_removed."""

from __future__ import annotations

import json

import pytest

import git_keepsake as keepsake
from git_keepsake import Project
from git_keepsake.cli import main
from git_keepsake.errors import NotFound

from .reference import keepsake_python, requires_keepsake


@pytest.fixture
def run(capsys):
    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _record(project_dir):
    (project_dir / "weights.bin").write_bytes(b"w" * 100)
    experiment = keepsake.init(params={"lr": 0.1})
    for step, loss in enumerate([0.5, 0.3]):
        experiment.checkpoint(
            path="weights.bin",
            step=step,
            metrics={"loss": loss},
            primary_metric=("loss", "minimize"),
            quiet=True,
        )
    experiment.stop()
    return experiment


def test_rm_checkpoint_removes_files_and_keeps_metrics(git_project, run):
    experiment = _record(git_project)
    storage = Project().repository.storage
    gone = experiment.checkpoints[1]
    code, _, err = run("rm", gone.short_id(), "-f")
    assert code == 0, err
    assert not storage.exists(f"checkpoints/{gone.id}.tar.gz")
    assert storage.exists(f"checkpoints/{experiment.checkpoints[0].id}.tar.gz")
    stored = json.loads(storage.get_bytes(f"metadata/experiments/{experiment.id}.json"))
    assert [(c["id"], c["step"], c["metrics"]) for c in stored["checkpoints"]] == [
        (experiment.checkpoints[0].id, 0, {"loss": 0.5}),
        (gone.id, 1, {"loss": 0.3}),
    ]
    assert stored["checkpoints"][1]["files_removed"] is True
    assert "files_removed" not in stored["checkpoints"][0]
    again = Project().experiments.get(experiment.id)
    assert [c.files_removed for c in again.checkpoints] == [False, True]
    assert again.best().id == gone.id  # its metrics still count
    with pytest.raises(NotFound, match=r"were removed \(git keepsake rm\)"):
        again.checkpoints[1].open("weights.bin")
    assert again.checkpoints[0].open("weights.bin").read() == b"w" * 100


def test_show_and_checkout_of_a_checkpoint_whose_files_were_removed(git_project, run):
    experiment = _record(git_project)
    gone = experiment.checkpoints[1]
    assert run("delete", gone.short_id(), "-f")[0] == 0
    code, out, _ = run("show", gone.short_id())
    assert code == 0 and "(files removed)" in out
    code, out, _ = run("show", experiment.short_id())
    assert code == 0 and "(files removed)" in out
    code, _, err = run("checkout", gone.short_id(), "-o", str(git_project / "out"), "-f")
    assert code != 0
    assert f"the files of checkpoint {gone.short_id()} were removed" in err
    assert "Traceback" not in err


@requires_keepsake
def test_real_keepsake_still_reads_the_experiment(git_project, run):
    experiment = _record(git_project)
    assert run("rm", experiment.checkpoints[1].short_id(), "-f")[0] == 0
    if not (git_project / "keepsake.yaml").exists():
        (git_project / "keepsake.yaml").write_text(f'repository: "{Project().repository.url}"\n')
    out = keepsake_python(
        "import keepsake; e = keepsake.experiments.list()[0]; "
        "print(len(e.checkpoints), e.checkpoints[1].metrics['loss'])",
        git_project,
    )
    assert out.strip() == "2 0.3"
