"""Faults a run and its recovery must survive (issue 13): a staging folder removed under a
running script, a full staging disk, a project churning files, SIGKILL mid-write, torn or
foreign journal files, a killed `git keepsake rm`, uploads that never happened."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest

import git_keepsake as keepsake
from tests.conftest import git, keepsake_cli, run_script
from tests.test_recovery import KILLED, killed_run

NOT_STRICT = {"GIT_KEEPSAKE_STRICT": "0"}


def staging(project: Path) -> Path:
    return project / ".git" / "keepsake" / "staging"


def stored_experiment(project: Path, experiment_id: str) -> dict:
    path = project / ".keepsake" / "metadata" / "experiments" / f"{experiment_id}.json"
    return json.loads(path.read_text())


def assert_names_no_missing_tarball(project: Path, experiment_id: str) -> None:
    """Invariant 2, in storage and in git: every path names a tarball that is there."""
    storage = project / ".keepsake"
    copies = [stored_experiment(project, experiment_id)]
    if (project / ".git").is_dir():
        ref = f"refs/keepsake/metadata/{experiment_id}"
        copies.append(json.loads(git("show", f"{ref}:.keepsake/experiment.json", cwd=project)))
    for found in copies:
        if found.get("path"):
            assert (storage / "experiments" / f"{experiment_id}.tar.gz").is_file()
        for checkpoint in found.get("checkpoints") or []:
            if checkpoint.get("path"):
                assert (storage / "checkpoints" / f"{checkpoint['id']}.tar.gz").is_file(), (
                    checkpoint
                )


def code_file(project: Path, experiment_id: str, rel: str) -> bytes:
    """A file of the experiment's code tarball."""
    tarball = project / ".keepsake" / "experiments" / f"{experiment_id}.tar.gz"
    with tarfile.open(tarball) as tar:
        return tar.extractfile(f"{experiment_id}/{rel}").read()


# --- 6: the staging folder removed while the script runs ---


@pytest.mark.parametrize("when", ["pending", "written"])
def test_staging_removed_under_a_running_script_exits_without_a_traceback(git_project, when):
    code = textwrap.dedent(
        f"""
        import subprocess, git_keepsake as keepsake
        experiment = keepsake.init(path="train.py", disable_heartbeat=True)
        with open("model.pth", "wb") as f:
            f.write(b"weights")
        experiment.checkpoint(path="model.pth", step=1, metrics={{"loss": 1.0}})
        if {when!r} == "written":
            experiment.flush()
        subprocess.run(["rm", "-rf", ".git/keepsake/staging"], check=True)
        experiment.checkpoint(step=2, metrics={{"loss": 0.5}})
        """
    )  # and no stop(): exit does it
    result = run_script(code, git_project, env=NOT_STRICT)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


# --- 7: staging fails half way ---


@pytest.fixture
def full_staging(git_project, mounts):
    """A 1 MB tmpfs as the project's staging root."""
    root = staging(git_project)
    root.mkdir(parents=True)
    return mounts("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(root))


def test_a_full_staging_disk_keeps_the_metrics_and_removes_the_partial_copy(
    git_project, full_staging, monkeypatch, capfd
):
    monkeypatch.setenv("GIT_KEEPSAKE_STRICT", "0")
    weights = git_project / "weights"
    weights.mkdir()
    (weights / "a.bin").write_bytes(b"a" * 300_000)
    (weights / "b.bin").write_bytes(b"b" * 2_000_000)  # the disk is full half way through it
    experiment = keepsake.init(path="train.py", disable_heartbeat=True)
    capfd.readouterr()
    big = experiment.checkpoint(path="weights", step=1, metrics={"loss": 1.0})
    err = capfd.readouterr().err
    assert "No space left on device" in err
    assert len([line for line in err.splitlines() if "warning" in line]) == 1, err
    # The partial copy is gone: the next checkpoint has room, and is stored whole.
    (session,) = full_staging.iterdir()
    assert not (session / big.id).exists()
    (git_project / "small.bin").write_bytes(b"s" * 400_000)
    small = experiment.checkpoint(path="small.bin", step=2, metrics={"loss": 0.5})
    experiment.stop()

    found = keepsake.experiments.get(experiment.id)
    assert [(c.id, c.metrics) for c in found.checkpoints] == [
        (big.id, {"loss": 1.0}),
        (small.id, {"loss": 0.5}),
    ]
    assert not found.checkpoints[0].path
    assert found.checkpoints[1].open("small.bin").read() == b"s" * 400_000
    assert_names_no_missing_tarball(git_project, experiment.id)


# --- 9: files that vanish while the project is copied ---

CHURN = textwrap.dedent(
    """
    import os, sys, time
    os.makedirs("tmp", exist_ok=True)
    n = 0
    while True:
        path = f"tmp/t{n % 400}.txt"
        with open(path, "w") as f:
            f.write("x" * 100)
        old = f"tmp/t{(n - 200) % 400}.txt"
        if os.path.exists(old):
            os.unlink(old)
        n += 1
        if n == 400:
            print("ready", flush=True)
    """
)


def churning_inits(project: Path, runs: int = 5) -> subprocess.CompletedProcess:
    """init(path=".") `runs` times while another process makes and deletes small files."""
    for i in range(300):
        (project / f"module_{i}.py").write_text(f"X = {i}\n" * 200)
    churn = subprocess.Popen(
        [sys.executable, "-c", CHURN], cwd=project, stdout=subprocess.PIPE, text=True
    )
    try:
        assert churn.stdout.readline() == "ready\n"
        code = textwrap.dedent(
            f"""
            import git_keepsake as keepsake
            for _ in range({runs}):
                experiment = keepsake.init(path=".", disable_heartbeat=True)
                experiment.stop()
                print(experiment.id, flush=True)
            """
        )
        return run_script(code, project, timeout=120)
    finally:
        churn.kill()
        churn.wait()


def test_files_vanishing_while_the_project_is_copied_are_skipped(project):
    result = churning_inits(project)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "could not stage" not in result.stderr
    for experiment_id in result.stdout.split():
        assert keepsake.experiments.get(experiment_id).path == "."
        assert code_file(project, experiment_id, "module_299.py") == b"X = 299\n" * 200
        assert_names_no_missing_tarball(project, experiment_id)


def test_files_vanishing_in_a_git_project_are_not_reported_as_too_big(git_project):
    result = churning_inits(git_project)
    assert result.returncode == 0, result.stderr
    assert "over 5 MB" not in result.stderr  # they are small: they vanished
    for experiment_id in result.stdout.split():
        assert code_file(git_project, experiment_id, "module_299.py") == b"X = 299\n" * 200
        assert_names_no_missing_tarball(git_project, experiment_id)


# --- 8: a kill while init() copies the project ---


def test_a_kill_while_the_code_is_staged_leaves_no_metadata_naming_a_missing_tarball(
    git_project,
):
    """A real SIGKILL while init() copies a 200 MB untracked file into staging: the journal
    names the experiment (journaled first), its staged copy has no job.json."""
    (git_project / "data.bin").write_bytes(os.urandom(1 << 20) * 200)
    code = "import git_keepsake as k; k.init(path='.', disable_heartbeat=True); input()"
    run = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=git_project,
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    copying = []
    while not copying and time.monotonic() < deadline and run.poll() is None:
        try:
            copying = list(staging(git_project).glob("*/*/files/data.bin"))
        except FileNotFoundError:
            pass  # the session folder was renamed in while we looked
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert copying, "init() never started copying"
    (experiment_id,) = [p.name for p in staging(git_project).glob("*/journal/*")]
    assert not list(staging(git_project).glob(f"*/{experiment_id}/job.json"))

    output = keepsake_cli("sync", cwd=git_project).stdout
    assert f"LOST (staged files gone): experiment {experiment_id[:7]}" in output
    assert not stored_experiment(git_project, experiment_id)["path"]
    assert_names_no_missing_tarball(git_project, experiment_id)


# --- 10: torn and foreign journal files ---


def test_a_torn_job_file_is_set_aside_and_the_rest_recovers(git_project):
    """Power loss (nothing was fsynced) can leave an empty job.json beside a journal line that
    names its checkpoint: crafted here as it would be found."""
    experiment_id, checkpoint_id = killed_run(git_project)
    (job,) = staging(git_project).glob(f"*/{checkpoint_id}/job.json")
    job.write_text("")
    result = keepsake_cli("sync", cwd=git_project)
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert f"checkpoint {checkpoint_id[:7]}" in output and "set aside" in output
    experiment = keepsake.experiments.get(experiment_id)
    assert [c.step for c in experiment.checkpoints] == [1, 2, 3]
    assert experiment.checkpoints[0].open("model.pth").read() == b"weights 1"
    assert not experiment.checkpoints[1].path  # its files were not known to be whole
    assert_names_no_missing_tarball(git_project, experiment_id)
    assert "nothing to recover" in keepsake_cli("sync", cwd=git_project).stdout


@pytest.mark.parametrize("entry", ["", '{"id": "abc', "[1]", '{"id": "%s"}'])
def test_a_corrupt_journaled_experiment_is_set_aside_and_the_rest_recovers(git_project, entry):
    bad_id, _ = killed_run(git_project)
    good_id, _ = killed_run(git_project)
    (head,) = staging(git_project).glob(f"*/journal/{bad_id}/experiment.json")
    head.write_text(entry.replace("%s", "f" * 64))  # the last: valid, but another experiment's
    result = keepsake_cli("sync", cwd=git_project)
    assert "Traceback" not in result.stderr
    assert f"experiment {bad_id[:7]}" in result.stderr and "set aside" in result.stderr
    assert f"experiment {good_id[:7]}: 3 checkpoint(s) recorded" in result.stdout
    assert len(keepsake.experiments.get(good_id).checkpoints) == 3
    assert "nothing to recover" in keepsake_cli("sync", cwd=git_project).stdout


def test_journal_files_are_written_by_rename(git_project):
    """Each journal file appears whole or not at all: written to a temporary name, synced and
    renamed (strace shows the renames)."""
    code = KILLED  # killed at the end: its journal stays, as it was written
    traced = subprocess.run(
        [
            "strace",
            "-f",
            "-e",
            "trace=rename,renameat,renameat2,fsync,fdatasync",
            "-o",
            "trace.txt",
            sys.executable,
            "-c",
            code,
        ],
        cwd=git_project,
        capture_output=True,
        text=True,
    )
    if traced.returncode != 0 and "strace" in traced.stderr:
        pytest.skip("no strace")
    trace = (git_project / "trace.txt").read_text()
    assert trace.count('job.json"') >= 3 and 'experiment.json"' in trace
    assert "fsync" in trace or "fdatasync" in trace


# --- 12: a `git keepsake rm` killed half way ---


def recorded(project: Path) -> str:
    code = textwrap.dedent(
        """
        import git_keepsake as keepsake
        experiment = keepsake.init(path="train.py", disable_heartbeat=True)
        experiment.checkpoint(step=1, metrics={"loss": 1.0})
        experiment.stop()
        print(experiment.id)
        """
    )
    result = run_script(code, project)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_a_stale_ref_lock_left_by_a_killed_rm_is_removed(git_project):
    experiment_id = recorded(git_project)
    lock = git_project / ".git" / "refs" / "keepsake" / "metadata" / f"{experiment_id}.lock"
    lock.write_text("")  # as a kill while libgit2 deleted the ref leaves it
    an_hour_ago = time.time() - 3600
    os.utime(lock, (an_hour_ago, an_hour_ago))
    keepsake_cli("rm", "-f", experiment_id, cwd=git_project)
    assert not lock.exists()
    assert git("for-each-ref", "refs/keepsake", cwd=git_project) == ""


def test_a_fresh_ref_lock_is_left_with_a_hint(git_project):
    experiment_id = recorded(git_project)
    lock = git_project / ".git" / "refs" / "keepsake" / "metadata" / f"{experiment_id}.lock"
    lock.write_text("")  # someone may be writing it right now
    result = keepsake_cli("rm", "-f", experiment_id, cwd=git_project, ok=False)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert "hint: " in result.stderr and str(lock) in result.stderr
    assert lock.exists()


def test_a_half_deleted_ref_pair_is_completed_by_sync(git_project):
    """rm deletes the metadata ref, then the snapshot ref, then storage: killed in between,
    the snapshot ref and the storage copy are left (made here with git itself)."""
    experiment_id = recorded(git_project)
    snapshot = git("rev-parse", f"refs/keepsake/experiments/{experiment_id}", cwd=git_project)
    git("update-ref", "-d", f"refs/keepsake/metadata/{experiment_id}", cwd=git_project)
    result = keepsake_cli("sync", cwd=git_project)
    assert experiment_id[:7] in result.stdout
    assert (
        git("rev-parse", f"refs/keepsake/experiments/{experiment_id}", cwd=git_project) == snapshot
    )
    assert git("rev-parse", f"refs/keepsake/metadata/{experiment_id}^", cwd=git_project) == snapshot
    assert len(keepsake.experiments.get(experiment_id).checkpoints) == 1
    keepsake_cli("rm", "-f", experiment_id, cwd=git_project)
    assert git("for-each-ref", "refs/keepsake", cwd=git_project) == ""


# --- 13: runs whose uploads failed ---


def test_runs_whose_uploads_failed_are_listed_as_not_uploaded(git_project, s3_env):
    """A run with no credentials (a cluster job, say): every write is refused, the script
    goes on, its snapshot ref is made. `ls` (where the credentials are) lists the run all the
    same, marked, and says how to upload it."""
    from tests.conftest import new_bucket_name

    (git_project / "keepsake.yaml").write_text(f'repository: "s3://{new_bucket_name()}"\n')
    git("add", "keepsake.yaml", cwd=git_project)
    git("commit", "-q", "-m", "s3", cwd=git_project)
    uploaded = recorded(git_project)  # makes the bucket
    code = textwrap.dedent(
        """
        import git_keepsake as keepsake
        experiment = keepsake.init(path="train.py", params={"lr": 0.3}, disable_heartbeat=True)
        experiment.checkpoint(step=1, metrics={"loss": 0.7})
        print(experiment.id)
        """
    )
    no_credentials = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    result = run_script(code, git_project, env={**NOT_STRICT, **no_credentials})
    assert result.returncode == 0, result.stderr
    assert "no credentials" in result.stderr
    experiment_id = result.stdout.strip()
    assert git("for-each-ref", f"refs/keepsake/experiments/{experiment_id}", cwd=git_project)

    listed = keepsake_cli("ls", cwd=git_project)
    (row,) = [line for line in listed.stdout.splitlines() if experiment_id[:7] in line]
    assert "not uploaded" in row and "lr=0.3" in row
    assert uploaded[:7] in listed.stdout
    assert "git keepsake sync" in listed.stderr
    as_json = json.loads(keepsake_cli("ls", "--json", cwd=git_project).stdout)
    (found,) = [e for e in as_json if e["id"] == experiment_id]
    assert found["status"] == "not uploaded" and found["params"] == {"lr": 0.3}
    (git_project / "other").mkdir()
    elsewhere = keepsake_cli("ls", "-R", f"file://{git_project / 'other'}", cwd=git_project)
    assert experiment_id[:7] not in elsewhere.stdout  # not recorded into that one

    assert experiment_id[:7] in keepsake_cli("sync", cwd=git_project).stdout
    listed = keepsake_cli("ls", cwd=git_project)
    assert "not uploaded" not in listed.stdout and experiment_id[:7] in listed.stdout


# --- 21: sync and a corrupt storage JSON ---


def test_sync_reports_a_corrupt_storage_json_and_goes_on(git_project):
    a, b = recorded(git_project), recorded(git_project)
    for experiment_id in (a, b):
        git("update-ref", "-d", f"refs/keepsake/metadata/{experiment_id}", cwd=git_project)
        git("update-ref", "-d", f"refs/keepsake/experiments/{experiment_id}", cwd=git_project)
    first = min(a, b)
    path = git_project / ".keepsake" / "metadata" / "experiments" / f"{first}.json"
    path.write_text('{"id": "')
    result = keepsake_cli("sync", cwd=git_project, ok=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"skipped experiment {first[:7]}" in result.stderr
    other = max(a, b)
    assert other[:7] in result.stdout
    assert git("for-each-ref", f"refs/keepsake/metadata/{other}", cwd=git_project)


def test_sync_does_not_bring_back_what_a_killed_rm_was_removing(git_project):
    """rm leaves its tombstone first, then deletes the refs, then storage: killed after the
    metadata ref went, sync must finish nothing of the experiment (it was being removed) and
    say how to finish the removal instead."""
    experiment_id = recorded(git_project)
    tombstone = git_project / ".git" / "keepsake" / "removed" / experiment_id
    tombstone.parent.mkdir(parents=True, exist_ok=True)
    tombstone.touch()
    git("update-ref", "-d", f"refs/keepsake/metadata/{experiment_id}", cwd=git_project)
    result = keepsake_cli("sync", cwd=git_project)
    assert git("for-each-ref", "refs/keepsake/metadata", cwd=git_project) == ""
    assert f"git keepsake rm {experiment_id[:7]}" in result.stderr, result.stderr
    keepsake_cli("rm", "-f", experiment_id[:7], cwd=git_project)
    assert git("for-each-ref", "refs/keepsake", cwd=git_project) == ""
    assert not list((git_project / ".keepsake" / "metadata" / "experiments").glob("*.json"))
