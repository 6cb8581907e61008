"""Experiments in git: snapshot commits, metadata refs, notes, and reading them back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import git_keepsake as keepsake
from git_keepsake.sharing import notes_from_refs
from tests.conftest import git

EXPERIMENTS = "refs/keepsake/experiments/"
METADATA = "refs/keepsake/metadata/"


def refs(cwd: Path, prefix: str) -> list[str]:
    out = git("for-each-ref", "--format=%(refname)", prefix, cwd=cwd)
    return out.split()


def status_snapshot(cwd: Path) -> tuple[str, bytes, str]:
    """Everything init() must leave alone: status, the index file, the stash."""
    status = git("status", "--porcelain=v2", "--branch", "--untracked-files=all", cwd=cwd)
    index = (cwd / ".git" / "index").read_bytes()
    stash = git("stash", "list", cwd=cwd)
    return status, index, stash


def dirty_project(root: Path) -> None:
    """A committed project, then: a modified tracked file, a staged file, an untracked file,
    an ignored file and an ignored data folder."""
    (root / ".gitignore").write_text("*.log\ndata/\n")
    (root / "model.py").write_text("LAYERS = 2\n")
    git("add", ".gitignore", "model.py", cwd=root)
    git("commit", "-q", "-m", "model", cwd=root)
    (root / "model.py").write_text("LAYERS = 3  # uncommitted\n")
    (root / "staged.py").write_text("STAGED = True\n")
    git("add", "staged.py", cwd=root)
    (root / "untracked.py").write_text("NEW = 1\n")
    (root / "train.log").write_text("ignored\n")
    (root / "data").mkdir()
    (root / "data" / "big.bin").write_bytes(b"x" * 1000)


def tree_files(cwd: Path, rev: str) -> dict[str, str]:
    names = git("ls-tree", "-r", "--name-only", rev, cwd=cwd).split()
    return {n: git("show", f"{rev}:{n}", cwd=cwd) for n in names}


def test_init_records_a_snapshot_commit_and_touches_nothing(git_project):
    dirty_project(git_project)
    git("stash", "list", cwd=git_project)
    before = status_snapshot(git_project)
    head = git("rev-parse", "HEAD", cwd=git_project).strip()

    experiment = keepsake.init(path=".", params={"lr": 0.1})
    experiment.checkpoint(metrics={"loss": 0.5}, primary_metric=("loss", "minimize"))
    experiment.stop()

    assert status_snapshot(git_project) == before
    ref = EXPERIMENTS + experiment.id
    assert refs(git_project, EXPERIMENTS) == [ref]
    assert git("rev-parse", ref + "^", cwd=git_project).strip() == head
    files = tree_files(git_project, ref)
    assert files["model.py"] == "LAYERS = 3  # uncommitted\n"  # the dirty version
    assert files["staged.py"] == "STAGED = True\n"
    assert files["untracked.py"] == "NEW = 1\n"
    assert "train.log" not in files and not any(f.startswith("data/") for f in files)
    assert not any(f.startswith(".keepsake") for f in files)
    # The diff against HEAD is exactly what was uncommitted.
    changed = git("diff", "--name-only", "HEAD", ref, cwd=git_project).split()
    assert changed == ["model.py", "staged.py", "untracked.py"]
    assert git("fsck", "--no-dangling", cwd=git_project) == ""


def test_git_fields_in_the_experiment_json(git_project):
    git("remote", "add", "origin", "https://example.com/team/repo.git", cwd=git_project)
    (git_project / "train.py").write_text("print('changed')\n")
    experiment = keepsake.init(path=".", params={"lr": 0.1})
    experiment.stop()
    head = git("rev-parse", "HEAD", cwd=git_project).strip()
    stored = json.loads(
        (git_project / ".keepsake/metadata/experiments" / f"{experiment.id}.json").read_text()
    )
    assert stored["git"] == {
        "commit": head,
        "branch": "main",
        "dirty": True,
        "snapshot": git("rev-parse", EXPERIMENTS + experiment.id, cwd=git_project).strip(),
        "remote": "https://example.com/team/repo.git",
    }
    # Keepsake's own fields come first, unchanged.
    assert list(stored)[:3] == ["id", "created", "params"]


def test_clean_tree_is_not_dirty(git_project):
    experiment = keepsake.init(path=".")
    experiment.stop()
    assert experiment.git.dirty is False
    ref = EXPERIMENTS + experiment.id
    assert git("rev-parse", ref + "^{tree}", cwd=git_project) == git(
        "rev-parse", "HEAD^{tree}", cwd=git_project
    )


def test_metadata_is_readable_from_git_alone(git_project):
    experiment = keepsake.init(path=".", params={"lr": 0.1})
    for loss in [0.5, 0.2, 0.3]:
        experiment.checkpoint(metrics={"loss": loss}, primary_metric=("loss", "minimize"))
    experiment.stop()
    stored = (git_project / ".keepsake/metadata/experiments" / f"{experiment.id}.json").read_bytes()
    in_git = subprocess.run(
        ["git", "show", f"{METADATA}{experiment.id}:.keepsake/experiment.json"],
        cwd=git_project,
        capture_output=True,
        check=True,
    ).stdout
    assert in_git == stored
    # The metadata commit sits on the snapshot commit.
    assert git("rev-parse", f"{METADATA}{experiment.id}^", cwd=git_project) == git(
        "rev-parse", EXPERIMENTS + experiment.id, cwd=git_project
    )

    # Offline: blob-storage metadata gone, the listing still works from git.
    for f in (git_project / ".keepsake/metadata/experiments").iterdir():
        f.unlink()
    [listed] = keepsake.experiments.list()
    assert listed.id == experiment.id
    assert listed.params == {"lr": 0.1}
    assert listed.best().metrics == {"loss": 0.2}
    assert [c.metrics["loss"] for c in listed.checkpoints] == [0.5, 0.2, 0.3]
    assert keepsake.experiments.get(experiment.id[:5]).latest().step == 2


def test_listing_merges_git_and_storage_without_duplicates(git_project, tmp_path):
    in_git = keepsake.init(path=".", params={"where": "git"})
    in_git.stop()
    # One recorded outside git into the same repository (as on a machine without the clone).
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "keepsake.yaml").write_text(f'repository: "file://{git_project}/.keepsake"\n')
    only_storage = keepsake.Project(directory=other).experiments.create(
        params={"where": "storage"}, quiet=True
    )
    only_storage.stop()

    listed = keepsake.experiments.list()
    assert sorted(e.params["where"] for e in listed) == ["git", "storage"]
    assert len({e.id for e in listed}) == 2


def test_index_is_a_cache_safe_to_delete(git_project):
    experiment = keepsake.init(path=".", params={"lr": 0.1})
    experiment.checkpoint(metrics={"loss": 0.4}, primary_metric=("loss", "minimize"))
    experiment.checkpoint(metrics={"loss": 0.1}, primary_metric=("loss", "minimize"))
    experiment.stop()
    index = git_project / ".git" / "keepsake" / "index.sqlite"

    first = keepsake.experiments.list()
    assert index.exists()
    warm = keepsake.experiments.list()  # from the index: best/latest without the checkpoints
    assert warm[0]._checkpoints is None
    assert warm[0].best().id == first[0].best().id == experiment.checkpoints[1].id
    assert warm[0].latest().step == 1
    assert len(warm[0].checkpoints) == 2  # loaded on first use

    index.unlink()
    again = keepsake.experiments.list()
    assert [e.id for e in again] == [experiment.id]

    index.write_bytes(b"not a database")
    assert [e.id for e in keepsake.experiments.list()] == [experiment.id]


def test_index_never_serves_stale_summaries(git_project):
    experiment = keepsake.init(path=".")
    experiment.checkpoint(metrics={"loss": 0.4}, primary_metric=("loss", "minimize"))
    experiment.flush()
    assert keepsake.experiments.list()[0].best().metrics == {"loss": 0.4}
    experiment.checkpoint(metrics={"loss": 0.1}, primary_metric=("loss", "minimize"))
    experiment.stop()
    assert keepsake.experiments.list()[0].best().metrics == {"loss": 0.1}


def test_note_on_head_lists_the_experiment(git_project):
    experiment = keepsake.init(path=".", params={"lr": 0.01})
    experiment.checkpoint(metrics={"loss": 0.25}, primary_metric=("loss", "minimize"))
    experiment.stop()
    log = git("log", "-1", "--notes=keepsake", cwd=git_project)
    assert experiment.short_id() in log
    assert "lr=0.01" in log
    assert "loss=0.25" in log


def test_untracked_files_over_the_limit_stay_out_of_git(git_project, capfd):
    (git_project / "keepsake.yaml").write_text("git_max_file_size: 1000\n")
    weights = os.urandom(5000)
    (git_project / "weights.bin").write_bytes(weights)
    (git_project / "small.txt").write_text("small\n")
    blob = subprocess.run(
        ["git", "hash-object", "weights.bin"], cwd=git_project, capture_output=True, text=True
    ).stdout.strip()

    experiment = keepsake.init(path=".")
    experiment.stop()

    err = capfd.readouterr().err
    assert "weights.bin" in err and "left out of the git snapshot" in err
    files = tree_files(git_project, EXPERIMENTS + experiment.id)
    assert "small.txt" in files and "weights.bin" not in files
    missing = subprocess.run(["git", "cat-file", "-e", blob], cwd=git_project)
    assert missing.returncode != 0  # never hashed into the object database
    tarball = git_project / ".keepsake" / "experiments" / f"{experiment.id}.tar.gz"
    with tarfile.open(tarball) as tar:
        member = tar.extractfile(f"{experiment.id}/weights.bin")
        assert member.read() == weights


def test_tracked_files_stay_even_if_gitignored_but_keepsakeignore_wins(git_project):
    (git_project / "config.cfg").write_text("tracked\n")
    (git_project / "secret.py").write_text("KEY = 1\n")
    git("add", "config.cfg", "secret.py", cwd=git_project)
    git("commit", "-q", "-m", "more", cwd=git_project)
    (git_project / ".gitignore").write_text("*.cfg\n")
    (git_project / ".keepsakeignore").write_text("secret.py\n")
    experiment = keepsake.init(path=".")
    experiment.stop()
    tarball = git_project / ".keepsake" / "experiments" / f"{experiment.id}.tar.gz"
    with tarfile.open(tarball) as tar:
        names = {m.name.split("/", 1)[1] for m in tar}
    assert "config.cfg" in names and "secret.py" not in names


def test_bad_size_limit_is_a_clear_error(git_project):
    (git_project / "keepsake.yaml").write_text("git_max_file_size: lots\n")
    with pytest.raises(keepsake.KeepsakeError, match="git_max_file_size must be a size"):
        keepsake.init(path=".")


@pytest.mark.parametrize("value, expected", [(123, 123), ("20MB", 20_000_000), ("1 MiB", 2**20)])
def test_size_limit_units(value, expected):
    from git_keepsake.config import parse_size

    assert parse_size(value, Path("keepsake.yaml")) == expected


# --- unusual repositories ---


def test_repository_without_commits(project):
    git("init", "-q", "-b", "main", cwd=project)
    (project / "train.py").write_text("print(1)\n")
    experiment = keepsake.init(path=".")
    experiment.stop()
    ref = EXPERIMENTS + experiment.id
    assert git("rev-list", "--count", ref, cwd=project).strip() == "1"  # no parent
    assert "train.py" in tree_files(project, ref)
    assert experiment.git.commit is None
    assert experiment.git.branch == "main"
    assert [e.id for e in keepsake.experiments.list()] == [experiment.id]


def test_detached_head(git_project):
    head = git("rev-parse", "HEAD", cwd=git_project).strip()
    git("checkout", "-q", "--detach", cwd=git_project)
    experiment = keepsake.init(path=".")
    experiment.stop()
    assert experiment.git.commit == head
    assert experiment.git.branch is None
    assert git("rev-parse", EXPERIMENTS + experiment.id + "^", cwd=git_project).strip() == head


def test_linked_worktree(git_project, tmp_path, monkeypatch):
    linked = tmp_path / "linked"
    git("worktree", "add", "-q", "-b", "feature", str(linked), cwd=git_project)
    (linked / "train.py").write_text("print('feature work')\n")
    monkeypatch.chdir(linked)
    experiment = keepsake.init(path=".")
    experiment.stop()
    # Refs live in the shared repository: visible from the main work tree too.
    assert refs(git_project, EXPERIMENTS) == [EXPERIMENTS + experiment.id]
    assert experiment.git.branch == "feature"
    assert tree_files(linked, EXPERIMENTS + experiment.id)["train.py"] == "print('feature work')\n"


def test_subdirectory_project(git_project, subdir_project):
    experiment = keepsake.init(path=".")
    experiment.stop()
    files = tree_files(git_project, EXPERIMENTS + experiment.id)
    assert files["ml/model.py"] == "X = 1\n"
    assert files["train.py"] == "print('train')\n"  # outside the path: HEAD's version
    assert "ml/.keepsake/repository.json" not in files
    assert [e.id for e in keepsake.experiments.list()] == [experiment.id]


def test_no_git_identity_configured(git_project, monkeypatch):
    for var in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
        monkeypatch.delenv(var, raising=False)
    experiment = keepsake.init(path=".")
    experiment.stop()
    author = git("log", "-1", "--format=%an <%ae>", EXPERIMENTS + experiment.id, cwd=git_project)
    assert author.startswith("git-keepsake <")


def test_outside_git_uses_blob_storage_only(project):
    (project / "train.py").write_text("print(1)\n")
    experiment = keepsake.init(path=".")
    experiment.stop()
    assert experiment.git is None
    assert [e.id for e in keepsake.experiments.list()] == [experiment.id]


# --- many writers at once ---

WORKER = """
import git_keepsake as keepsake
e = keepsake.init(path=".", params={"worker": %d}, disable_heartbeat=True)
e.checkpoint(metrics={"loss": 1.0 / (1 + %d)}, primary_metric=("loss", "minimize"), quiet=True)
e.stop()
"""


def test_fifty_processes_at_once(git_project):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER % (i, i)],
            cwd=git_project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(50)
    ]
    failures = []
    for p in processes:
        out, err = p.communicate(timeout=120)
        if p.returncode != 0:
            failures.append(err.decode()[-500:])
    assert not failures, failures[0]

    experiments = keepsake.experiments.list()
    assert sorted(e.params["worker"] for e in experiments) == list(range(50))
    assert len(refs(git_project, EXPERIMENTS)) == 50
    assert len(refs(git_project, METADATA)) == 50
    note = git("notes", "--ref=keepsake", "show", "HEAD", cwd=git_project)
    assert all(e.short_id() in note for e in experiments)
    fsck = subprocess.run(["git", "fsck"], cwd=git_project, capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stderr
    assert "error" not in fsck.stdout + fsck.stderr


def test_notes_are_rebuilt_from_the_refs(git_project):
    first = keepsake.init(path=".", params={"lr": 0.1})
    first.checkpoint(metrics={"loss": 0.3}, primary_metric=("loss", "minimize"))
    first.stop()
    second = keepsake.init(path=".", params={"lr": 0.2})
    second.stop()
    git("update-ref", "-d", "refs/notes/keepsake", cwd=git_project)

    project = keepsake.Project()
    assert notes_from_refs(project, project.git) == 1
    note = git("notes", "--ref=keepsake", "show", "HEAD", cwd=git_project)
    assert note.splitlines() == [
        f"keepsake experiment {first.short_id()}: lr=0.1; best loss=0.3 at step 0",
        f"keepsake experiment {second.short_id()}: lr=0.2",
    ]
