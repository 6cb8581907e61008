"""Untrusted input, as an attacker or a damaged repository would give it: metadata pulled from a
teammate's remote or found in storage, and keepsake.yaml. IDs are 64 hex characters or the record
is refused; strings never reach the terminal raw; bad input is `error:` + `hint:` and exit 1."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.conftest import GIT_KEEPSAKE, git, run_script

TRAIN = textwrap.dedent(
    """
    import git_keepsake as keepsake
    experiment = keepsake.init(path=".", params={"lr": 0.1})
    with open("model.pth", "wb") as f:
        f.write(b"weights")
    experiment.checkpoint(path="model.pth", step=1, metrics={"loss": 0.5},
                          primary_metric=("loss", "minimize"))
    experiment.stop()
    print(experiment.id)
    """
)


def train(clone: Path, script: str = TRAIN, *argv: str) -> str:
    result = run_script(script, clone, timeout=120) if not argv else _run_argv(script, clone, argv)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def _run_argv(script: str, cwd: Path, argv) -> subprocess.CompletedProcess:
    path = cwd / "train_script.py"
    path.write_text(script)
    import sys

    return subprocess.run(
        [sys.executable, path.name, *argv], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def raw_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The CLI with its output as bytes: text mode would turn a "\\r" into a newline."""
    return subprocess.run(
        [GIT_KEEPSAKE, *args], cwd=cwd, capture_output=True, timeout=120, stdin=subprocess.DEVNULL
    )


def assert_clean_failure(result, *named: str) -> str:
    """Exit 1, `error: ...` then `hint: ...`, no traceback; returns stderr."""
    stderr = result.stderr if isinstance(result.stderr, str) else result.stderr.decode()
    assert result.returncode == 1, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    lines = stderr.splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert errors and lines[errors[0] + 1 :][:1] != [], stderr
    assert lines[errors[0] + 1].startswith("hint: "), stderr
    for text in named:
        assert text in stderr, stderr
    return stderr


def rewrite_git_metadata(clone: Path, experiment_id: str, change) -> None:
    """Replace an experiment's metadata in git with `change(json) -> json`, using git alone,
    as an attacker would before pushing to a shared remote."""
    ref = f"refs/keepsake/metadata/{experiment_id}"
    commit = git("rev-parse", ref, cwd=clone).strip()
    old = git("show", f"{commit}:.keepsake/experiment.json", cwd=clone)
    new = _changed(old, change)
    blob = subprocess.run(
        ["git", "hash-object", "-w", "--stdin"],
        cwd=clone,
        input=new,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    env = {**os.environ, "GIT_INDEX_FILE": str(clone / ".git" / "attacker-index")}

    def plumbing(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=clone, env=env, capture_output=True, text=True, check=True
        ).stdout.strip()

    plumbing("read-tree", commit)
    plumbing("update-index", "--add", "--cacheinfo", f"100644,{blob},.keepsake/experiment.json")
    tree = plumbing("write-tree")
    new_commit = plumbing("commit-tree", tree, "-p", commit, "-m", "metadata")
    git("update-ref", ref, new_commit, cwd=clone)


def rewrite_storage_metadata(storage: Path, experiment_id: str, change) -> None:
    path = storage / "metadata" / "experiments" / f"{experiment_id}.json"
    path.write_text(_changed(path.read_text(), change))


def _changed(text: str, change) -> str:
    """`change` returns the new JSON, or its text (for what json.dumps can't write)."""
    new = change(json.loads(text))
    return new if isinstance(new, str) else json.dumps(new, indent=1)


@pytest.fixture
def attacker_and_victim(tmp_path):
    """A bare remote; an attacker's clone and a victim's clone of it, each with its own storage."""
    remote = tmp_path / "remote.git"
    git("init", "-q", "--bare", "-b", "main", str(remote), cwd=tmp_path)
    attacker = tmp_path / "attacker"
    git("clone", "-q", str(remote), str(attacker), cwd=tmp_path)
    (attacker / "train.py").write_text("print('the model')\n")
    (attacker / ".gitignore").write_text("model.pth\nkeepsake.yaml\n")
    git("add", ".", cwd=attacker)
    git("commit", "-q", "-m", "the training script", cwd=attacker)
    git("push", "-q", "origin", "main", cwd=attacker)
    victim = tmp_path / "victim"
    git("clone", "-q", str(remote), str(victim), cwd=tmp_path)
    for clone in (attacker, victim):
        storage = tmp_path / f"{clone.name}-storage"
        (clone / "keepsake.yaml").write_text(f'repository: "file://{storage}"\n')
    return attacker, victim


def push_refs(clone: Path) -> None:
    git("push", "-q", "origin", "refs/keepsake/*:refs/keepsake/*", cwd=clone)


BAD_CONFIGS = {
    "not UTF-8": b'repository: "file://.keep\xffsake"\n',
    "invalid YAML": b"repository: [unclosed\n",
    "a list": b"- repository\n",
    "repository is a number": b"repository: 7\n",
    "repository is a mapping": b"repository: {a: 1}\n",
    "an unknown setting": b"respository: file://.keepsake\n",
    "size overflows": b"git_max_file_size: 1e999\n",
    "size is a list": b"git_max_file_size: [1]\n",
    "a non-string key": b"1: file://.keepsake\n",
    "both repository and storage": b"repository: file://a\nstorage: file://b\n",
}


@pytest.mark.parametrize("content", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_a_bad_keepsake_yaml_is_one_clear_line(project, content):
    (project / "keepsake.yaml").write_bytes(content)
    for command in (["ls"], ["show", "abc1234"]):
        assert_clean_failure(raw_cli(*command, cwd=project), "keepsake.yaml")
