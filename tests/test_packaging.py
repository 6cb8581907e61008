"""How the hook reaches users: in the wheel (built from hooks/pre-push, its one source), and as
a pre-commit framework hook (.pre-commit-hooks.yaml), driven here by the real pre-commit.

Nothing here reaches a package index: builds and pre-commit's virtualenv install from a
wheelhouse made in the session from what this environment has, setuptools from the wheels
virtualenv (pre-commit's dependency) embeds, and git-keepsake's dependencies repacked from
their installed files, with pip told to use no index and no config file.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from tests.conftest import git
from tests.test_hook import PRE_COMMIT, remote_refs
from tests.test_sharing import keepsake, team, train  # noqa: F401 (team is a fixture)

ROOT = Path(__file__).resolve().parents[1]
SKIPPED_IN_DIST_INFO = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


def offline_env(wheelhouse: Path, **more: str) -> dict[str, str]:
    """The environment for pip, and for what runs pip: this wheelhouse and nothing else."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUALENV_"))}
    env.update(
        PIP_CONFIG_FILE=os.devnull,  # no machine config: no extra index, no constraints
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=str(wheelhouse),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        VIRTUALENV_NO_PERIODIC_UPDATE="1",  # virtualenv must not look for newer seed wheels
        **more,
    )
    return env


def run(*cmd: str, cwd: Path, env: dict | None = None, timeout: float = 120):
    done = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{cmd}:\n{done.stdout}\n{done.stderr}"
    return done


def _requirement_closure() -> list[metadata.Distribution]:
    """git-keepsake's installed runtime dependencies, all the way down (markers evaluated)."""
    from packaging.requirements import Requirement

    found: dict[str, metadata.Distribution] = {}
    extras_seen: dict[str, set[str]] = {}

    def walk(name: str, extras: set[str]) -> None:
        dist = metadata.distribution(name)
        key = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        if key in extras_seen and extras <= extras_seen[key]:
            return
        extras_seen.setdefault(key, set()).update(extras)
        found[key] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in extras | {""}):
                continue
            walk(req.name, set(req.extras))

    walk("git-keepsake", set())
    del found["git-keepsake"]
    return list(found.values())


def repack(dist: metadata.Distribution, folder: Path) -> Path:
    """A wheel of an installed distribution, from the files its RECORD lists (its scripts
    aside: pip makes them again from entry_points.txt), with the tags its WHEEL file names."""
    wheel_info = dist.read_text("WHEEL") or ""
    tags = [
        line.split(":", 1)[1].strip() for line in wheel_info.splitlines() if line.startswith("Tag:")
    ]
    parts = [sorted({tag.split("-")[i] for tag in tags}) for i in range(3)]
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"]).lower()
    target = folder / f"{name}-{dist.version}-{'-'.join('.'.join(p) for p in parts)}.whl"
    records = io.StringIO()
    writer = csv.writer(records, lineterminator="\n")
    dist_info = None
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as wheel:
        for file in dist.files or []:
            path = file.as_posix()
            top = path.split("/")[0]
            if top == ".." or "__pycache__" in path.split("/"):
                continue
            if top.endswith(".dist-info"):
                dist_info = top
                if path.split("/")[-1] in SKIPPED_IN_DIST_INFO:
                    continue
            data = Path(dist.locate_file(file)).read_bytes()
            wheel.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            writer.writerow([path, f"sha256={digest.decode()}", len(data)])
        assert dist_info, f"{name}: no .dist-info in its RECORD"
        writer.writerow([f"{dist_info}/RECORD", "", ""])
        wheel.writestr(f"{dist_info}/RECORD", records.getvalue())
    return target


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory) -> Path:
    import virtualenv

    folder = tmp_path_factory.mktemp("wheelhouse")
    embedded = Path(virtualenv.__file__).parent / "seed" / "wheels" / "embed"
    wheels = list(embedded.glob("setuptools-*.whl"))
    if wheels:  # the build backend, for builds in isolation
        shutil.copy(max(wheels, key=lambda p: _version_key(p.name)), folder)
    else:  # a virtualenv that embeds none: this environment's own (pyproject wants >= 68)
        repack(metadata.distribution("setuptools"), folder)
    for dist in _requirement_closure():
        repack(dist, folder)
    return folder


def _version_key(wheel_name: str) -> tuple:
    version = wheel_name.split("-")[1]
    return tuple(int(n) if n.isdigit() else 0 for n in version.split("."))


@pytest.fixture(scope="session")
def checkout(tmp_path_factory) -> tuple[Path, str]:
    """This checkout as it is now (tracked files and new ones not ignored, uncommitted changes
    too), committed in a repository of its own: what a user's pre-commit would clone."""
    source = tmp_path_factory.mktemp("git-keepsake-source")
    listed = run("git", "ls-files", "-z", "-c", "-o", "--exclude-standard", cwd=ROOT).stdout
    for name in filter(None, listed.split("\0")):
        path = ROOT / name
        if path.is_file():  # a file deleted but not yet staged is listed too
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, source / name)
    env = {
        **os.environ,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    run("git", "init", "-q", "-b", "main", cwd=source, env=env)
    run("git", "add", "-A", cwd=source, env=env)
    run("git", "commit", "-q", "-m", "this checkout", cwd=source, env=env)
    return source, run("git", "rev-parse", "HEAD", cwd=source, env=env).stdout.strip()


@pytest.fixture(scope="session")
def built_wheel(checkout, wheelhouse, tmp_path_factory) -> Path:
    source, _ = checkout
    out = tmp_path_factory.mktemp("dist")
    run(
        sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source),
        cwd=source,
        env=offline_env(wheelhouse),
    )  # fmt: skip
    (wheel,) = out.glob("git_keepsake-*.whl")
    return wheel


def test_the_wheel_ships_the_hook_from_hooks_folder(built_wheel):
    with zipfile.ZipFile(built_wheel) as wheel:
        names = set(wheel.namelist())
        assert wheel.read("git_keepsake/hooks/pre-push") == (ROOT / "hooks/pre-push").read_bytes()
        mode = wheel.getinfo("git_keepsake/hooks/pre-push").external_attr >> 16
    assert mode & 0o111, "the hook lost its executable bits"  # install rewrites it anyway
    assert not any(name.startswith("hooks/") for name in names)  # no top-level `hooks` package
    # Every module of the package, so a subpackage missing from pyproject's list shows here.
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "git_keepsake").rglob("*.py")}
    assert modules - names == set()


def test_an_installed_wheel_reads_its_own_copy_of_the_hook(built_wheel, tmp_path):
    """Installed (not editable) into a folder of its own, hook_text() reads the wheel's file."""
    site = tmp_path / "site"
    run(
        sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
        "--target", str(site), str(built_wheel),
        cwd=tmp_path,
    )  # fmt: skip
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from importlib import resources\n"
        "from git_keepsake import hook\n"
        "print(resources.files('git_keepsake.hooks').joinpath('pre-push'))\n"
        "sys.stdout.write(hook.hook_text())\n"
    )
    out = run(sys.executable, "-c", probe, str(site), cwd=tmp_path).stdout
    where, text = out.split("\n", 1)
    assert Path(where) == site / "git_keepsake" / "hooks" / "pre-push"
    expected = (ROOT / "hooks/pre-push").read_text().replace("@PYTHON@", sys.executable)
    assert text == expected


def test_the_pre_commit_framework_pushes_experiments(team, checkout, wheelhouse, tmp_path):  # noqa: F811
    """A user's setup: .pre-commit-config.yaml names this repository at a commit, pre-commit
    installs it in a virtualenv of its own, and a real `git push` sends the experiments."""
    a, _, remote = team
    source, rev = checkout
    (a / ".pre-commit-config.yaml").write_text(
        f"repos:\n- repo: {source}\n  rev: {rev}\n  hooks:\n  - id: git-keepsake-push\n"
    )
    git("add", ".pre-commit-config.yaml", cwd=a)
    git("commit", "-q", "-m", "pre-commit", cwd=a)
    env = offline_env(wheelhouse, PRE_COMMIT_HOME=str(tmp_path / "pre-commit-home"))
    run(PRE_COMMIT, "install", "-t", "pre-push", cwd=a, env=env)
    experiment_id = train(a, 0.1)

    (a / "notes.txt").write_text("more\n")
    git("add", "notes.txt", cwd=a)
    git("commit", "-q", "-m", "more", cwd=a)
    pushed = run("git", "push", "origin", "main", cwd=a, env=env, timeout=180)
    output = pushed.stdout + pushed.stderr
    assert "git-keepsake (push experiments)" in output and "Passed" in output, output
    assert "git-keepsake: pushed 1 experiment(s) to origin" in output, output
    assert f"refs/keepsake/metadata/{experiment_id}" in remote_refs(remote)
    listed = run("git", "ls-remote", str(remote), "refs/keepsake/*", cwd=a).stdout
    assert f"refs/keepsake/metadata/{experiment_id}" in listed
    assert git("rev-parse", "main", cwd=remote) == git("rev-parse", "main", cwd=a)

    # The same clone with `git keepsake install` too: pushed once, by that hook.
    keepsake("install", cwd=a)
    experiment_id = train(a, 0.2)
    (a / "notes.txt").write_text("more still\n")
    git("commit", "-q", "-am", "more still", cwd=a)
    pushed = run("git", "push", "origin", "main", cwd=a, env=env)
    output = pushed.stdout + pushed.stderr
    assert output.count("git-keepsake: pushed 2 experiment(s) to origin") == 1, output
    assert "pushes the experiments: nothing to add" in output, output
    assert f"refs/keepsake/metadata/{experiment_id}" in remote_refs(remote)
