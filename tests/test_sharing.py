"""Teammates sharing experiments through one git remote (a real bare repository) and one
storage: `git keepsake push` and `pull`, with notes rebuilt instead of conflicting."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.conftest import git, run_script
from tests.conftest import keepsake_cli as keepsake

TRAIN = textwrap.dedent(
    """
    import sys, git_keepsake as keepsake
    lr = float(sys.argv[1]) if len(sys.argv) > 1 else 0.1
    experiment = keepsake.init(path=".", params={"lr": LR})
    with open("model.pth", "wb") as f:
        f.write(b"weights for LR")
    experiment.checkpoint(path="model.pth", step=1, metrics={"loss": LR})
    experiment.stop()
    print(experiment.id)
    """
)


def train(clone: Path, lr: float) -> str:
    result = run_script(TRAIN.replace("LR", repr(lr)), clone)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture
def team(tmp_path):
    """A bare remote, and clones A and B of it sharing one storage folder."""
    remote = tmp_path / "remote.git"
    git("init", "-q", "--bare", "-b", "main", str(remote), cwd=tmp_path)
    a = tmp_path / "a"
    git("clone", "-q", str(remote), str(a), cwd=tmp_path)
    (a / "train.py").write_text("print('the model')\n")
    (a / "keepsake.yaml").write_text(f'repository: "file://{tmp_path / "storage"}"\n')
    (a / ".gitignore").write_text("model.pth\n")
    git("add", ".", cwd=a)
    git("commit", "-q", "-m", "the training script", cwd=a)
    git("push", "-q", "origin", "main", cwd=a)
    b = tmp_path / "b"
    git("clone", "-q", str(remote), str(b), cwd=tmp_path)
    return a, b, remote


def listed(clone: Path) -> dict[str, dict]:
    return {e["id"]: e for e in json.loads(keepsake("ls", "--json", cwd=clone).stdout)}


def test_a_teammate_pulls_and_checks_out_exactly_what_was_pushed(team, tmp_path):
    a, b, _ = team
    experiment_id = train(a, 0.1)
    (a / "train.py").write_text("print('changed after the run')\n")  # not what the run used
    assert "pushed 1 experiment(s) to origin" in keepsake("push", cwd=a).stdout

    assert "1 new experiment(s)" in keepsake("pull", cwd=b).stdout
    (shown,) = listed(b).values()
    assert shown["id"] == experiment_id
    assert shown["git"]["commit"] == git("rev-parse", "HEAD", cwd=a).strip()
    keepsake("checkout", experiment_id[:7], "-o", str(tmp_path / "out"), "-f", cwd=b)
    assert (tmp_path / "out" / "train.py").read_text() == "print('the model')\n"
    assert (tmp_path / "out" / "model.pth").read_bytes() == b"weights for 0.1"
    notes = git("notes", "--ref=keepsake", "show", "HEAD", cwd=b)
    assert experiment_id[:7] in notes


def test_notes_from_both_sides_are_merged_not_conflicted(team):
    a, b, remote = team
    first = train(a, 0.1)
    keepsake("push", cwd=a)
    keepsake("pull", cwd=b)
    second = train(b, 0.2)
    keepsake("push", cwd=b)
    third = train(a, 0.3)  # A's notes lack B's line: a plain notes push would be rejected
    keepsake("push", cwd=a)
    keepsake("pull", cwd=b)

    for clone in (a, b):
        assert set(listed(clone)) == {first, second, third}
    notes = git("notes", "--ref=keepsake", "show", "HEAD", cwd=b)
    assert all(i[:7] in notes for i in (first, second, third))
    on_remote = git("for-each-ref", "--format=%(refname)", "refs/keepsake/metadata", cwd=remote)
    assert len(on_remote.split()) == 3


def test_pull_moves_metadata_forward_and_never_back(team):
    """The writer keeps moving an experiment's metadata ref as checkpoints arrive: a pull
    takes the remote's copy only where it is newer."""
    import time

    from git_keepsake import Project
    from git_keepsake.git.refs import METADATA_REFS

    a, b, _ = team
    experiment_id = train(a, 0.1)
    keepsake("push", cwd=a)
    keepsake("pull", cwd=b)
    writer = Project(directory=a).git
    ref = METADATA_REFS + experiment_id
    snapshot = git("rev-parse", f"refs/keepsake/experiments/{experiment_id}", cwd=a).strip()

    def advance(seconds: float) -> str:  # as the training process would, later on
        return writer.write_metadata(
            experiment_id, snapshot, b"{}", writer.ref_target(ref), time.time() + seconds
        )

    newer = advance(10)
    keepsake("push", cwd=a)
    assert "0 new experiment(s), 1 updated" in keepsake("pull", cwd=b).stdout
    assert git("rev-parse", ref, cwd=b).strip() == newer

    newest = advance(20)  # not pushed: the remote's copy is older now
    assert "0 new experiment(s), 0 updated" in keepsake("pull", cwd=a).stdout
    assert git("rev-parse", ref, cwd=a).strip() == newest


def test_push_without_the_remote_is_one_clear_line(team):
    a, _, _ = team
    done = keepsake("push", "nowhere", cwd=a, ok=False)
    assert done.returncode == 1
    assert (
        done.stderr.splitlines()[0] == "error: there is no git remote 'nowhere' (remotes: origin)"
    )


def test_an_unreachable_remote_is_one_clear_line(team, tmp_path):
    a, _, _ = team
    git("remote", "add", "gone", str(tmp_path / "nowhere.git"), cwd=a)
    for command in ("push", "pull"):
        done = keepsake(command, "gone", cwd=a, ok=False)
        assert done.returncode == 1
        error, hint = done.stderr.splitlines()
        assert error.startswith("error: git fetch failed: ") and "nowhere.git" in error
        assert hint == "hint: check the remote's URL and your access to it: git remote -v"


def test_push_outside_git_is_one_clear_line(project):
    done = keepsake("push", cwd=project, ok=False)
    assert done.returncode == 1
    assert "is not in a git repository" in done.stderr.splitlines()[0]
