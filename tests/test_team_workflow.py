"""Teammates through a real bare remote: nothing goes unshared without a word (experiments on
no remote, storage inside a clone)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.conftest import git, run_script
from tests.conftest import keepsake_cli as keepsake

TRAIN = textwrap.dedent(
    """
    import git_keepsake as keepsake
    experiment = keepsake.init(path=".", params={"lr": 0.1})
    with open("model.pth", "wb") as f:
        f.write(b"weights")
    experiment.checkpoint(path="model.pth", step=1, metrics={"loss": 0.1})
    experiment.stop()
    print(experiment.id)
    """
)
UNPUSHED = (
    "{n} experiment(s) not on any git remote yet (git keepsake push shares them; "
    "`git push` does only when it has commits to push)"
)


def train(clone: Path):
    result = run_script(TRAIN, clone)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip(), result.stderr


@pytest.fixture
def remote(tmp_path):
    """A bare remote holding one commit whose keepsake.yaml is `repository`, set per test."""
    bare = tmp_path / "remote.git"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    return bare


def first_clone(tmp_path: Path, bare: Path, repository: str | None) -> Path:
    a = tmp_path / "a"
    git("clone", "-q", str(bare), str(a), cwd=tmp_path)
    (a / "train.py").write_text("print('the model')\n")
    (a / ".gitignore").write_text("model.pth\n.keepsake/\n")
    if repository:
        (a / "keepsake.yaml").write_text(f'repository: "{repository}"\n')
    git("add", ".", cwd=a)
    git("commit", "-q", "-m", "the training script", cwd=a)
    git("push", "-q", "origin", "main", cwd=a)
    return a


def test_stop_and_ls_say_what_no_remote_has_until_it_is_pushed(remote, tmp_path):
    a = first_clone(tmp_path, remote, f"file://{tmp_path / 'storage'}")
    keepsake("install", cwd=a)
    _, stderr = train(a)
    assert stderr.splitlines()[-1] == "git-keepsake: " + UNPUSHED.format(n=1)
    train(a)
    listed = keepsake("ls", cwd=a)
    assert listed.stderr.splitlines()[-1] == "hint: " + UNPUSHED.format(n=2)

    git("push", "-q", "origin", "main", cwd=a)  # nothing new for git: the hook never runs
    assert keepsake("ls", cwd=a).stderr.splitlines()[-1] == "hint: " + UNPUSHED.format(n=2)

    keepsake("push", cwd=a)
    assert keepsake("ls", cwd=a).stderr == ""
    _, stderr = train(a)
    assert stderr.splitlines()[-1] == "git-keepsake: " + UNPUSHED.format(n=1)
    (a / "train.py").write_text("print('better')\n")
    git("commit", "-q", "-am", "better", cwd=a)
    git("push", "-q", "origin", "main", cwd=a)  # a new commit: the hook pushes them
    assert keepsake("ls", cwd=a).stderr == ""


def test_a_teammates_pulled_experiments_are_on_the_remote(remote, tmp_path):
    a = first_clone(tmp_path, remote, f"file://{tmp_path / 'storage'}")
    train(a)
    keepsake("push", cwd=a)
    b = tmp_path / "b"
    git("clone", "-q", str(remote), str(b), cwd=tmp_path)
    keepsake("pull", cwd=b)
    assert keepsake("ls", cwd=b).stderr == ""


def test_without_a_remote_nothing_is_said(git_project):
    _, stderr = train(git_project)
    assert "not on any git remote" not in stderr
    assert keepsake("ls", cwd=git_project).stderr == ""


def test_another_remote_name_is_in_the_command(remote, tmp_path):
    a = first_clone(tmp_path, remote, f"file://{tmp_path / 'storage'}")
    git("remote", "rename", "origin", "team", cwd=a)
    _, stderr = train(a)
    assert stderr.splitlines()[-1] == "git-keepsake: " + UNPUSHED.format(n=1).replace(
        "git keepsake push", "git keepsake push team"
    )


PER_CLONE = (
    "warning: experiments' files are stored in this clone (file://{root}/.keepsake): teammates "
    "can fetch the experiments but not their files; for shared storage set in keepsake.yaml "
    'e.g. repository: "s3://my-bucket/keepsake"'
)


def test_per_clone_storage_is_warned_of_at_install_and_push(remote, tmp_path):
    a = first_clone(tmp_path, remote, None)  # the default: file://.keepsake in the clone
    warning = PER_CLONE.format(root=a.resolve())
    assert keepsake("install", cwd=a).stderr.splitlines() == [warning]
    train(a)
    assert keepsake("push", cwd=a).stderr.splitlines() == [warning]
    (a / "train.py").write_text("print('better')\n")
    git("commit", "-q", "-am", "better", cwd=a)
    hooked = subprocess_push(a)
    assert hooked.splitlines()[-1] == f"git-keepsake: {warning}"


def subprocess_push(clone: Path) -> str:
    import subprocess

    done = subprocess.run(
        ["git", "push", "-q", "origin", "main"], cwd=clone, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_shared_storage_is_not_warned_of(remote, tmp_path):
    a = first_clone(tmp_path, remote, f"file://{tmp_path / 'storage'}")
    assert keepsake("install", cwd=a).stderr == ""
    train(a)
    assert keepsake("push", cwd=a).stderr == ""


def test_a_teammates_checkout_names_the_storage_it_was_recorded_to(remote, tmp_path):
    a = first_clone(tmp_path, remote, None)
    experiment_id, _ = train(a)
    keepsake("push", cwd=a)
    b = tmp_path / "b"
    git("clone", "-q", str(remote), str(b), cwd=tmp_path)
    keepsake("pull", cwd=b)
    done = keepsake("checkout", experiment_id[:7], "-o", str(tmp_path / "out"), cwd=b, ok=False)
    assert done.returncode == 1
    (error,) = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert error.startswith("error: the files of checkpoint ")
    assert error.endswith(
        f"is not in file://{b.resolve()}/.keepsake (experiment {experiment_id[:7]} was "
        f"recorded to file://{a.resolve()}/.keepsake)"
    )
