"""Process-level behaviour: exit waits for writes and stops experiments; storage trouble warns."""

from __future__ import annotations

import json

import pytest

import git_keepsake as keepsake
from git_keepsake.errors import StorageError

from .conftest import run_script


def test_exit_without_stop_flushes_and_marks_stopped(project):
    (project / "model.pth").write_bytes(b"w" * 1000)
    result = run_script(
        "import git_keepsake as k\n"
        "e = k.init(params={'lr': 0.1})\n"
        "for i in range(20):\n"
        "    e.checkpoint(path='model.pth', metrics={'loss': 1 / (i + 1)}, quiet=True)\n"
        "print(e.id)\n",
        cwd=project,
    )
    assert result.returncode == 0, result.stderr
    experiment = keepsake.experiments.get(result.stdout.strip())
    assert len(experiment.checkpoints) == 20
    assert not experiment.is_running()
    heartbeats = project / ".keepsake" / "metadata" / "heartbeats"
    assert not list(heartbeats.glob("*.json"))
    for chk in experiment.checkpoints:
        assert chk.open("model.pth").read() == b"w" * 1000


def test_staging_is_cleaned_up_after_writes(git_project):
    (git_project / "model.pth").write_bytes(b"w")
    experiment = keepsake.init(path="train.py")
    experiment.checkpoint(path="model.pth", quiet=True)
    experiment.stop()
    staging = git_project / ".git" / "keepsake" / "staging"
    (session,) = staging.iterdir()  # this process's, locked until it exits
    assert sorted(p.name for p in session.iterdir()) == ["journal", "lock"]
    assert not any((session / "journal").iterdir())  # all written: nothing to recover


def test_staging_is_gone_after_exit(git_project):
    (git_project / "model.pth").write_bytes(b"w")
    code = (
        "import git_keepsake as keepsake\n"
        "e = keepsake.init(path='train.py')\n"
        "e.checkpoint(path='model.pth', quiet=True)\n"
    )
    result = run_script(code, git_project)
    assert result.returncode == 0, result.stderr
    assert not any((git_project / ".git" / "keepsake" / "staging").iterdir())


def test_repository_is_kept_out_of_git(git_project):
    experiment = keepsake.init(path=".")
    experiment.stop()
    exclude = (git_project / ".git" / "info" / "exclude").read_text()
    assert "/.keepsake/" in exclude.splitlines()
    keepsake.init().stop()  # not added twice
    assert (git_project / ".git" / "info" / "exclude").read_text().count("/.keepsake/") == 1
    import subprocess

    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=git_project, capture_output=True, text=True
    ).stdout
    assert ".keepsake" not in status


def test_storage_failure_warns_and_training_goes_on(project, monkeypatch, capfd):
    monkeypatch.setenv("GIT_KEEPSAKE_STRICT", "0")
    experiment = keepsake.init()
    experiment.flush()
    storage = experiment._project.repository.storage

    def broken(*args, **kwargs):
        raise StorageError("disk on fire")

    monkeypatch.setattr(storage, "put_bytes", broken)
    experiment.checkpoint(metrics={"loss": 1.0}, quiet=True)
    experiment.checkpoint(metrics={"loss": 0.5}, quiet=True)  # no exception: training goes on
    experiment.flush()
    assert "disk on fire" in capfd.readouterr().err
    experiment.stop()


def test_storage_failure_raises_in_strict_mode(project, monkeypatch):
    experiment = keepsake.init(disable_heartbeat=True)
    experiment.flush()
    storage = experiment._project.repository.storage

    def broken(*args, **kwargs):
        raise StorageError("disk on fire")

    monkeypatch.setattr(storage, "put_bytes", broken)
    experiment.checkpoint(metrics={"loss": 1.0}, quiet=True)
    with pytest.raises(StorageError, match="disk on fire"):
        experiment.flush()
    monkeypatch.undo()
    experiment.stop()


def test_metadata_is_never_ahead_of_tarballs(project, monkeypatch):
    """While tarballs are slow, the metadata file names only checkpoints already stored."""
    import threading

    from git_keepsake.store import writer

    (project / "model.pth").write_bytes(b"w")
    gate = threading.Event()
    real = writer.write_tarball

    def slow_tarball(dest, top, files):
        gate.wait(5)
        real(dest, top, files)

    monkeypatch.setattr(writer, "write_tarball", slow_tarball)
    experiment = keepsake.init(disable_heartbeat=True)
    gate.set()
    experiment.flush()
    gate.clear()
    chk = experiment.checkpoint(path="model.pth", quiet=True)
    experiment.checkpoint(metrics={"only": 1}, quiet=True)
    meta = project / ".keepsake" / "metadata" / "experiments" / f"{experiment.id}.json"
    for _ in range(50):
        if meta.exists():
            data = json.loads(meta.read_text())
            ids = [c["id"] for c in data["checkpoints"] or []]
            assert chk.id not in ids
    gate.set()
    experiment.stop()
    ids = [c["id"] for c in json.loads(meta.read_text())["checkpoints"]]
    assert ids[0] == chk.id and len(ids) == 2


def test_a_forked_child_exits_without_waiting_on_the_parents_writes(project):
    """A forked helper that ends normally runs the exit handlers it inherited: they used to
    wait forever on writes only the parent's thread does, and would tidy its staging."""
    code = (
        "import os, sys, git_keepsake as keepsake\n"
        "e = keepsake.init(params={'a': 1})\n"
        "open('w.bin', 'wb').write(os.urandom(20_000_000))\n"
        "e.checkpoint(path='w.bin', step=1, quiet=True)\n"
        "if os.fork() == 0:\n"
        "    sys.exit(0)\n"
        "os.wait()\n"
        "e.checkpoint(path='w.bin', step=2, quiet=True)\n"
        "e.stop()\n"
        "print(e.id)\n"
    )
    result = run_script(code, project, timeout=60)
    assert result.returncode == 0, result.stderr
    experiment = keepsake.experiments.get(result.stdout.strip())
    assert [c.step for c in experiment.checkpoints] == [1, 2]
    assert experiment.checkpoints[1].open("w.bin").read() == (project / "w.bin").read_bytes()
