"""Hermetic tests: isolated HOME and git config, strict mode, a fresh project dir per test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
KEEPSAKE_042 = FIXTURES / "keepsake-0.4.2"


@pytest.fixture(autouse=True)
def hermetic(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    for var, value in {
        "GIT_AUTHOR_NAME": "Test Author",
        "GIT_AUTHOR_EMAIL": "author@example.com",
        "GIT_COMMITTER_NAME": "Test Committer",
        "GIT_COMMITTER_EMAIL": "committer@example.com",
    }.items():
        monkeypatch.setenv(var, value)
    # libgit2 reads HOME once, when pygit2 is first imported: point it at this test's HOME.
    import pygit2
    from pygit2.enums import ConfigLevel

    for level, path in {
        ConfigLevel.SYSTEM: home / "etc",
        ConfigLevel.XDG: home / ".config" / "git",
        ConfigLevel.GLOBAL: home,
    }.items():
        pygit2.settings.search_path[level] = str(path)
    monkeypatch.setenv("GIT_KEEPSAKE_STRICT", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    yield
    from git_keepsake import experiment

    for running in list(experiment._running):
        running.stop()


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An empty project directory (not a git repo), made the current directory."""
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def fixture_project(tmp_path):
    """A writable copy of the repository Keepsake 0.4.2 wrote (../shared/fixtures)."""
    target = tmp_path / "keepsake-0.4.2"
    shutil.copytree(KEEPSAKE_042, target)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


@pytest.fixture
def subdir_project(git_project, monkeypatch):
    """A project in the `ml/` folder of a git work tree (its own keepsake.yaml), made the
    current directory."""
    sub = git_project / "ml"
    sub.mkdir()
    (sub / "keepsake.yaml").write_text('repository: "file://.keepsake"\n')
    (sub / "model.py").write_text("X = 1\n")
    monkeypatch.chdir(sub)
    return sub


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def git_project(project):
    """A project that is a git work tree with one commit."""
    git("init", "-q", "-b", "main", cwd=project)
    (project / "train.py").write_text("print('train')\n")
    git("add", "train.py", cwd=project)
    git("commit", "-q", "-m", "initial", cwd=project)
    return project


def run_script(code: str, cwd: Path, env: dict | None = None, timeout: float = 60):
    """Run a training script in a fresh interpreter (for exit behaviour and real processes)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
