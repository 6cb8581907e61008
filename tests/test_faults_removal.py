"""Removal stays removed, and `-R URL` reads and writes that repository only (issue 13, items
11 and 19): real processes, a real SIGKILL against stalled storage, a real bare remote."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from tests.conftest import git, keepsake_cli, new_bucket_name, run_script

TRAIN = textwrap.dedent(
    """
    import git_keepsake as keepsake
    experiment = keepsake.init(path="train.py", params={"lr": LR}, disable_heartbeat=True)
    with open("model.pth", "wb") as f:
        f.write(b"weights for LR")
    experiment.checkpoint(path="model.pth", step=1, metrics={"loss": LR})
    experiment.stop()
    print(experiment.id)
    """
)


def train(project: Path, lr: float = 0.1) -> str:
    result = run_script(TRAIN.replace("LR", repr(lr)), project)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def refs(project: Path) -> str:
    return git("for-each-ref", "--format=%(refname)", "refs/keepsake", cwd=project)


def listed(project: Path, *args: str) -> list[str]:
    result = keepsake_cli("ls", "--json", *args, cwd=project)
    return [e["id"] for e in json.loads(result.stdout)]


# --- item 11 (a): rm of a killed run whose writes had not finished, then sync ---


class StallingProxy:
    """A TCP proxy in front of the S3 server that can stall: while stalled, it accepts
    connections and forwards nothing (storage that stopped answering)."""

    def __init__(self, port: int):
        self.target = ("127.0.0.1", port)
        self.stalled = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.stalled.is_set():
                self.held.append(client)
                continue
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.listener.close()
        for s in self.held:
            s.close()


KILLED_MID_WRITE = textwrap.dedent(
    """
    import sys, git_keepsake as keepsake
    experiment = keepsake.init(path="train.py", params={"lr": 0.1}, disable_heartbeat=True)
    with open("model.pth", "wb") as f:
        f.write(b"weights 1")
    first = experiment.checkpoint(path="model.pth", step=1, metrics={"loss": 1.0})
    assert experiment.flush()  # stored: in ls, from git and from the bucket
    print(experiment.id, first.id, flush=True)
    sys.stdin.readline()  # the storage stalls now
    with open("model.pth", "wb") as f:
        f.write(b"weights 2")
    second = experiment.checkpoint(path="model.pth", step=2, metrics={"loss": 0.5})
    print("staged", second.id, flush=True)
    sys.stdin.readline()  # killed here, its upload pending
    """
)


@pytest.fixture
def s3_project(git_project, s3_env, monkeypatch):
    bucket = new_bucket_name()
    (git_project / "keepsake.yaml").write_text(f'repository: "s3://{bucket}"\n')
    proxy = StallingProxy(s3_env.port)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    yield git_project, bucket, proxy
    proxy.close()


def killed_mid_write(project: Path, proxy: StallingProxy) -> tuple[str, str, str]:
    """Run KILLED_MID_WRITE, stall the storage after its first checkpoint is stored, SIGKILL
    it once the second is staged: (experiment id, first checkpoint id, second's)."""
    run = subprocess.Popen(
        [sys.executable, "-c", KILLED_MID_WRITE],
        cwd=project,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = run.stdout.readline().split()
        assert line, run.stderr.read()
        proxy.stalled.set()
        run.stdin.write("\n")
        run.stdin.flush()
        staged, second = run.stdout.readline().split()
        assert staged == "staged"
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=10)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    proxy.stalled.clear()
    experiment_id, first = line
    return experiment_id, first, second


def test_rm_of_a_killed_run_is_not_recovered_by_sync(s3_project):
    project, bucket, proxy = s3_project
    experiment_id, _, _ = killed_mid_write(project, proxy)
    assert listed(project) == [experiment_id]  # its first checkpoint was stored

    keepsake_cli("rm", "-f", experiment_id[:7], cwd=project)
    assert listed(project) == []
    output = keepsake_cli("sync", cwd=project).stdout
    assert experiment_id[:7] not in output
    assert listed(project) == []
    assert refs(project) == ""
    import boto3

    objects = boto3.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])
    assert [o["Key"] for o in objects if experiment_id in o["Key"]] == []
    # Nothing of it is left staged for a later run's recovery either.
    staging = project / ".git" / "keepsake" / "staging"
    assert not any(experiment_id in str(p) for p in staging.rglob("*"))


def test_rm_of_a_killed_runs_checkpoint_is_not_recovered_by_sync(s3_project):
    project, _, proxy = s3_project
    experiment_id, first, second = killed_mid_write(project, proxy)
    keepsake_cli("rm", "-f", first[:7], cwd=project)
    output = keepsake_cli("sync", cwd=project).stdout
    assert f"experiment {experiment_id[:7]}: 1 checkpoint(s) recorded" in output
    import git_keepsake as keepsake

    (checkpoint,) = keepsake.experiments.get(experiment_id).checkpoints
    assert checkpoint.id == second and checkpoint.open("model.pth").read() == b"weights 2"


def test_rm_refuses_a_run_alive_here_without_a_heartbeat(git_project):
    code = TRAIN.replace("LR", "0.1").replace("experiment.stop()", "assert experiment.flush()")
    code = code.replace("print(experiment.id)", "print(experiment.id, flush=True)\ninput()")
    run = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=git_project,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        experiment_id = run.stdout.readline().strip()
        assert experiment_id, run.stderr.read()
        result = keepsake_cli("rm", "-f", experiment_id[:7], cwd=git_project, ok=False)
        assert result.returncode == 1
        assert f"is running here (process {run.pid})" in result.stderr
        assert experiment_id in refs(git_project)
    finally:
        run.kill()
        run.wait()
    keepsake_cli("rm", "-f", experiment_id[:7], cwd=git_project)  # killed: an orphan now
    assert keepsake_cli("sync", cwd=git_project).stdout.startswith("nothing to recover")
    assert listed(git_project) == []


# --- item 11 (b): rm of a pushed experiment, then push or pull ---


@pytest.fixture
def shared(git_project, tmp_path):
    """The project with a real bare remote `origin`."""
    remote = tmp_path / "remote.git"
    git("init", "-q", "--bare", "-b", "main", str(remote), cwd=tmp_path)
    git("remote", "add", "origin", str(remote), cwd=git_project)
    git("push", "-q", "origin", "main", cwd=git_project)
    return git_project, remote


def test_rm_of_a_pushed_experiment_stays_removed_through_push_and_pull(shared):
    project, remote = shared
    removed, kept = train(project, 0.1), train(project, 0.2)
    keepsake_cli("push", cwd=project)
    keepsake_cli("rm", "-f", removed[:7], cwd=project)

    pushed = keepsake_cli("push", cwd=project)
    assert removed not in refs(project)
    assert listed(project) == [kept]
    assert "1 experiment(s) removed here were not brought back" in pushed.stdout
    assert "git keepsake pull --include-removed" in pushed.stdout
    # Removing is local: the remote still has it, for the team.
    assert removed in git("for-each-ref", "refs/keepsake", cwd=remote)

    pulled = keepsake_cli("pull", cwd=project)
    assert "0 new experiment(s)" in pulled.stdout
    assert "1 experiment(s) removed here were not brought back" in pulled.stdout
    assert listed(project) == [kept]

    back = keepsake_cli("pull", "--include-removed", cwd=project)
    assert "1 new experiment(s)" in back.stdout
    assert sorted(listed(project)) == sorted([removed, kept])
    assert "removed here" not in keepsake_cli("pull", cwd=project).stdout


def commit_and_push(project: Path, name: str) -> subprocess.CompletedProcess:
    """A new commit pushed with `git push`, so the pre-push hook runs."""
    (project / name).write_text("more\n")
    git("add", name, cwd=project)
    git("commit", "-q", "-m", name, cwd=project)
    pushed = subprocess.run(
        ["git", "push", "origin", "main"], cwd=project, capture_output=True, text=True
    )
    assert pushed.returncode == 0, pushed.stderr
    return pushed


def test_git_push_through_the_hook_does_not_bring_a_removal_back(shared):
    project, remote = shared
    keepsake_cli("install", cwd=project)
    removed = train(project)
    commit_and_push(project, "one.txt")
    assert removed in git("for-each-ref", "refs/keepsake", cwd=remote)
    keepsake_cli("rm", "-f", removed[:7], cwd=project)
    pushed = commit_and_push(project, "two.txt")
    assert "git-keepsake: 1 experiment(s) removed here were not brought back" in pushed.stderr
    assert refs(project) == "" and listed(project) == []


def test_a_fresh_pull_says_nothing_of_removals(shared, tmp_path):
    project, remote = shared
    train(project, 0.1)
    keepsake_cli("push", cwd=project)
    clone = tmp_path / "clone"
    git("clone", "-q", str(remote), str(clone), cwd=tmp_path)
    pulled = keepsake_cli("pull", cwd=clone)
    assert "1 new experiment(s)" in pulled.stdout and "removed" not in pulled.stdout


# --- rm: a git fault is one line ---


def test_rm_with_a_locked_ref_is_one_line_and_removes_nothing_of_storage(git_project):
    experiment_id = train(git_project)
    lock = git_project / ".git" / "refs" / "keepsake" / "metadata" / f"{experiment_id}.lock"
    lock.write_text("")  # a git process (or a killed one) holds the ref
    result = keepsake_cli("rm", "-f", experiment_id[:7], cwd=git_project, ok=False)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert (
        f"error: could not delete the git refs of experiment {experiment_id[:7]}" in result.stderr
    )
    assert "hint:" in result.stderr
    # Storage goes after git: it is still whole, and rm can be run again.
    lock.unlink()
    assert listed(git_project) == [experiment_id]
    keepsake_cli("rm", "-f", experiment_id[:7], cwd=git_project)
    assert listed(git_project) == []


# --- item 19: -R URL reads and writes that repository only ---


@pytest.fixture
def two_repositories(git_project, tmp_path):
    """The git project with an experiment of its own, an empty repository, and another
    repository with an experiment of its own (recorded by another project)."""
    local = train(git_project, 0.1)
    empty = tmp_path / "empty"
    empty.mkdir()
    other_project = tmp_path / "other-project"
    other_project.mkdir()
    other = tmp_path / "other"
    (other_project / "keepsake.yaml").write_text(f'repository: "file://{other}"\n')
    (other_project / "train.py").write_text("print('other')\n")
    foreign = train(other_project, 0.7)
    return git_project, local, f"file://{empty}", f"file://{other}", foreign


def test_ls_and_show_with_R_read_that_repository_only(two_repositories):
    project, local, empty, other, foreign = two_repositories
    assert listed(project, "-R", empty) == []
    assert listed(project, "-R", other) == [foreign]
    assert listed(project) == [local]
    shown = keepsake_cli("show", "-R", empty, local[:7], cwd=project, ok=False)
    assert (
        shown.returncode == 1
        and f"error: no experiment or checkpoint matches {local[:7]!r}" in shown.stderr
    )
    keepsake_cli("show", "-R", other, foreign[:7], cwd=project)
    # The project's own repository named with -R is the project: its git refs included.
    assert listed(project, "-R", "file://.keepsake") == [local]


def test_diff_with_R_compares_within_that_repository_only(two_repositories, tmp_path):
    project, local, _, other, foreign = two_repositories
    result = keepsake_cli("diff", "-R", other, local[:7], foreign[:7], cwd=project, ok=False)
    assert result.returncode == 1
    assert f"error: no experiment or checkpoint matches {local[:7]!r}" in result.stderr
    other_project = tmp_path / "other-project"  # now in git: its experiments have snapshots
    git("init", "-q", "-b", "main", cwd=other_project)
    git("add", "train.py", cwd=other_project)
    git("commit", "-q", "-m", "other", cwd=other_project)
    a, b = train(other_project, 0.8), train(other_project, 0.9)
    shown = keepsake_cli("diff", "-R", other, a[:7], b[:7], cwd=project).stdout
    assert "git is left out for a repository other than the project's" in shown


def test_rm_with_R_deletes_from_that_repository_only(two_repositories, tmp_path):
    project, local, empty, other, foreign = two_repositories
    before = refs(project)
    result = keepsake_cli("rm", "-f", "-R", other, local[:7], cwd=project, ok=False)
    assert result.returncode == 1
    assert refs(project) == before and listed(project) == [local]
    keepsake_cli("rm", "-f", "-R", other, foreign[:7], cwd=project)
    assert listed(project, "-R", other) == []
    assert refs(project) == before and listed(project) == [local]
    assert not (project / ".git" / "keepsake" / "removed").exists()


def test_checkout_with_R_reads_that_repository_only(two_repositories, tmp_path):
    project, local, empty, other, foreign = two_repositories
    result = keepsake_cli(
        "checkout", "-R", empty, local[:7], "-o", str(tmp_path / "a"), "-f", cwd=project, ok=False
    )
    assert result.returncode == 1 and not (tmp_path / "a").exists()
    assert f"error: no experiment or checkpoint matches {local[:7]!r}" in result.stderr
    keepsake_cli("checkout", "-R", other, foreign[:7], "-o", str(tmp_path / "b"), "-f", cwd=project)
    assert (tmp_path / "b" / "train.py").read_text() == "print('other')\n"
    assert (tmp_path / "b" / "model.pth").read_bytes() == b"weights for 0.7"


@pytest.mark.parametrize("command", ["push", "pull"])
def test_push_and_pull_refuse_another_repository(two_repositories, command):
    project, _, _, other, _ = two_repositories
    git("remote", "add", "origin", str(project), cwd=project)
    result = keepsake_cli(command, "-R", other, cwd=project, ok=False)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "hint: " in result.stderr
    assert "Traceback" not in result.stderr


def test_sync_with_R_brings_nothing_into_this_projects_git(two_repositories):
    project, local, _, other, foreign = two_repositories
    before = refs(project)
    keepsake_cli("sync", "-R", other, cwd=project)
    assert refs(project) == before


def test_checkout_with_R_of_a_copy_says_why_the_git_snapshot_is_not_used(
    two_repositories, tmp_path
):
    """A copy of the project's repository is another repository: its experiments' code comes
    from their tarballs, and the note says why git is not used (not "no git work tree")."""
    import shutil

    project, local, *_ = two_repositories
    copy = tmp_path / "copy"
    shutil.copytree(project / ".keepsake", copy)
    result = keepsake_cli(
        "checkout", "-R", f"file://{copy}", local[:7], "-o", str(tmp_path / "c"), "-f", cwd=project
    )
    said = result.stdout + result.stderr
    assert "is read alone, without this project's git" in said, said
    assert "not in a git work tree" not in said
