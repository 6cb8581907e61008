"""Benchmark repositories: N experiments x 50 checkpoints, recorded as git-keepsake records them."""

from __future__ import annotations

import datetime as dt
import random
import subprocess
from pathlib import Path

import pygit2

import git_keepsake as keepsake
from git_keepsake import metadata
from git_keepsake.checkpoint import Checkpoint
from git_keepsake.experiment import Experiment
from git_keepsake.records import GitInfo

CHECKPOINTS = 50


def git(*args: str, cwd: Path, stdin: str | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, input=stdin, check=True, capture_output=True, text=True
    ).stdout


def generate(root: Path, count: int) -> None:
    """A project with `count` experiments in git refs and in blob storage, like real runs."""
    root.mkdir()
    git("init", "-q", "-b", "main", cwd=root)
    (root / "train.py").write_text("print('train')\n")
    git("add", "train.py", cwd=root)
    git(
        "-c",
        "user.name=bench",
        "-c",
        "user.email=bench@example.com",
        "commit",
        "-qm",
        "x",
        cwd=root,
    )
    project = keepsake.Project(directory=root)
    repository = project.repository
    repository.ensure_created()
    repo = pygit2.Repository(str(root))
    head = repo.head.target
    tree = repo[head].peel(pygit2.Tree)
    signature = pygit2.Signature("bench", "bench@example.com")
    rng = random.Random(0)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    updates = []
    for i in range(count):
        created = start + dt.timedelta(minutes=i)
        experiment = Experiment(
            project,
            id=metadata.new_id(),
            created=created,
            user="bench",
            host="gpu-box",
            command="python train.py",
            config={"repository": repository.url, "storage": ""},
            path=".",
            params={"learning_rate": rng.choice([0.1, 0.01, 0.001]), "batch_size": 64, "seed": i},
            python_version="3.11.7",
            python_packages={"torch": "2.3.0", "numpy": "1.26.4", "git-keepsake": "0.1.0"},
            keepsake_version="0.1.0",
        )
        experiment.checkpoints = [
            Checkpoint(
                id=metadata.new_id(),
                created=created + dt.timedelta(seconds=10 * step),
                path="model.pth",
                step=step,
                metrics={"loss": rng.random(), "accuracy": rng.random()},
                primary_metric={"name": "loss", "goal": "minimize"},
            )
            for step in range(CHECKPOINTS)
        ]
        snapshot = repo.create_commit(None, signature, signature, "snapshot\n", tree.id, [head])
        experiment.git = GitInfo(str(head), "main", False, str(snapshot), None)
        text = experiment.encode()
        repository.write_experiment(experiment.id, text)
        inner = repo.TreeBuilder()
        inner.insert("experiment.json", repo.create_blob(text.encode()), pygit2.GIT_FILEMODE_BLOB)
        outer = repo.TreeBuilder(tree)
        outer.insert(".keepsake", inner.write(), pygit2.GIT_FILEMODE_TREE)
        meta = repo.create_commit(
            None, signature, signature, "metadata\n", outer.write(), [snapshot]
        )
        updates.append(f"create refs/keepsake/experiments/{experiment.id} {snapshot}\n")
        updates.append(f"create refs/keepsake/metadata/{experiment.id} {meta}\n")
    git("update-ref", "--stdin", cwd=root, stdin="".join(updates))
    git("pack-refs", "--all", cwd=root)
    git("gc", "-q", cwd=root)  # as a repository that has lived a while: objects packed too
