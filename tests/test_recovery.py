"""A run killed after checkpoint() returned loses nothing (DESIGN.md invariant 1): the next
init() in the project or `git keepsake sync` finishes its writes from the journal."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

import git_keepsake as keepsake
from tests.conftest import keepsake_cli, run_script

# SIGKILL at a chosen moment is a fault no real setup gives on demand: the writer thread is
# held back so that the kill always comes before it wrote anything.
KILLED = textwrap.dedent(
    """
    import os, signal, threading, git_keepsake as keepsake
    from git_keepsake.store import writer
    writer.Writer._run = lambda self: threading.Event().wait()
    experiment = keepsake.init(path="train.py", params={"lr": 0.1}, disable_heartbeat=True)
    for step in (1, 2):
        with open("model.pth", "wb") as f:
            f.write(b"weights %d" % step)
        checkpoint = experiment.checkpoint(path="model.pth", step=step, metrics={"loss": 1 / step})
    experiment.checkpoint(step=3, metrics={"loss": 0.25})  # metrics only, nothing staged
    print(experiment.id, checkpoint.id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def killed_run(project) -> tuple[str, str]:
    """Run KILLED; the experiment's ID and its second checkpoint's."""
    result = run_script(KILLED, project)
    assert result.returncode == -signal.SIGKILL, result.stderr
    experiment_id, checkpoint_id = result.stdout.split()
    assert not (project / ".keepsake" / "metadata" / "experiments").exists()  # nothing written
    return experiment_id, checkpoint_id


def recover_by(how: str, project) -> str:
    """Recover the way a user would: the next training run, or `git keepsake sync`."""
    if how == "init":
        code = "import git_keepsake as k; k.init(path='train.py', disable_heartbeat=True).stop()"
        result = run_script(code, project)
        output = result.stderr
    else:
        result = keepsake_cli("sync", cwd=project)
        output = result.stdout
    assert result.returncode == 0, result.stderr
    return output


@pytest.mark.parametrize("how", ["init", "sync"])
def test_a_killed_run_is_recovered(git_project, how):
    experiment_id, checkpoint_id = killed_run(git_project)
    output = recover_by(how, git_project)
    assert f"experiment {experiment_id[:7]}: 3 checkpoint(s) recorded, uploaded" in output
    assert f"checkpoint {checkpoint_id[:7]}" in output

    experiment = keepsake.experiments.get(experiment_id)
    assert [c.step for c in experiment.checkpoints] == [1, 2, 3]
    assert [c.metrics["loss"] for c in experiment.checkpoints] == [1.0, 0.5, 0.25]
    assert experiment.checkpoints[1].open("model.pth").read() == b"weights 2"
    assert experiment.checkpoints[0].open("model.pth").read() == b"weights 1"
    assert not experiment.is_running()
    # In git as well, as the writer would have left it: the metadata ref and the note.
    refs = subprocess.run(
        ["git", "for-each-ref", "--format=%(refname)", "refs/keepsake/metadata"],
        cwd=git_project,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"refs/keepsake/metadata/{experiment_id}" in refs
    notes = subprocess.run(
        ["git", "notes", "--ref=keepsake", "show", "HEAD"],
        cwd=git_project,
        capture_output=True,
        text=True,
    ).stdout
    assert experiment_id[:7] in notes
    assert list((git_project / ".git" / "keepsake" / "staging").iterdir()) == []

    assert "nothing to recover" in recover_by("sync", git_project)  # done once, not again


def test_staged_files_gone_are_reported_and_the_metrics_kept(git_project):
    experiment_id, checkpoint_id = killed_run(git_project)
    staging = git_project / ".git" / "keepsake" / "staging"
    (staged,) = staging.glob(f"*/{checkpoint_id}")
    shutil.rmtree(staged / "files")
    output = recover_by("sync", git_project)
    assert f"LOST (staged files gone): checkpoint {checkpoint_id[:7]}" in output

    experiment = keepsake.experiments.get(experiment_id)
    lost = experiment.checkpoints[1]
    assert lost.id == checkpoint_id and lost.metrics == {"loss": 0.5} and not lost.path
    assert experiment.checkpoints[0].open("model.pth").read() == b"weights 1"


def test_a_run_still_going_is_left_alone(git_project):
    code = KILLED.replace("os.kill(os.getpid(), signal.SIGKILL)", "input()")
    alive = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=git_project,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        experiment_id, _ = alive.stdout.readline().split()
        assert "nothing to recover" in recover_by("sync", git_project)
    finally:
        alive.kill()
        alive.wait()
    assert f"experiment {experiment_id[:7]}" in recover_by("sync", git_project)


def test_outside_git_the_journal_is_in_the_cache(project, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (project / "train.py").write_text("print('train')\n")
    experiment_id, _ = killed_run(project)
    assert f"experiment {experiment_id[:7]}: 3 checkpoint(s)" in recover_by("sync", project)
    assert len(keepsake.experiments.get(experiment_id).checkpoints) == 3


def test_recovered_from_the_root_into_a_subfolder_projects_repository(git_project):
    """The pre-push hook runs at the repository root: a run of a project in a subfolder (its
    own keepsake.yaml) goes back to that project's repository, not the root's default."""
    sub = git_project / "vision"
    sub.mkdir()
    (sub / "keepsake.yaml").write_text('repository: "file://runs"\n')
    (sub / "train.py").write_text("print('train')\n")
    experiment_id, checkpoint_id = killed_run(sub)
    assert f"experiment {experiment_id[:7]}" in recover_by("sync", git_project)
    assert (sub / "runs" / "checkpoints" / f"{checkpoint_id}.tar.gz").is_file()
    assert not (git_project / ".keepsake").exists()
    found = keepsake.Project(directory=sub).experiments.get(experiment_id)
    assert found.checkpoints[1].open("model.pth").read() == b"weights 2"


def test_sync_brings_a_keepsake_repository_into_git(fixture_project):
    """Keepsake 0.4.2 wrote these experiments with no git at all: sync gives each a snapshot
    commit from its tarball and a metadata ref, and leaves Keepsake's files as they were."""
    import json

    from tests.conftest import git

    git("init", "-q", "-b", "main", cwd=fixture_project)
    storage = fixture_project / ".keepsake"
    before = {p: p.read_bytes() for p in storage.rglob("*") if p.is_file()}
    listed = keepsake_cli("ls", "--json", cwd=fixture_project)
    ids = sorted(e["id"] for e in json.loads(listed.stdout))
    with_code = {p.name.split(".")[0] for p in (storage / "experiments").iterdir()}

    output = recover_by("sync", fixture_project)
    assert f"brought {len(ids)} experiment(s) from storage into git" in output
    for experiment_id in ids:
        meta = git(
            "show",
            f"refs/keepsake/metadata/{experiment_id}:.keepsake/experiment.json",
            cwd=fixture_project,
        )
        snapshot = json.loads(meta)["git"]["snapshot"]
        assert (
            git(
                "rev-parse", f"refs/keepsake/experiments/{experiment_id}", cwd=fixture_project
            ).strip()
            == snapshot
        )
        tree = git("ls-tree", "-r", "--name-only", snapshot, cwd=fixture_project).split()
        assert ("train.py" in tree) == (experiment_id in with_code)
    assert {p: p.read_bytes() for p in storage.rglob("*") if p.is_file()} == before
    diff = keepsake_cli("diff", *sorted(with_code), cwd=fixture_project).stdout
    assert "not compared" not in diff and "train.py" in diff  # the two snapshots' code
    assert "git has every experiment" in recover_by("sync", fixture_project)  # idempotent
