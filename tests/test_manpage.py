"""The man page behind `git keepsake --help`: generated from the click commands, in the wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MANPAGE = ROOT / "share" / "man" / "man1" / "git-keepsake.1"
IN_WHEEL = "data/share/man/man1/git-keepsake.1"  # under git_keepsake-<version>.data/
# Not copied into the tree a wheel is built from: caches, venvs and build output.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".ci", ".venv", ".keepsake", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
)


def test_manpage_is_generated_from_the_current_commands():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "make_manpage.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("man") is None, reason="man is not installed")
def test_manpage_renders_without_warnings():
    result = subprocess.run(
        ["man", "--warnings", "-l", str(MANPAGE)],
        capture_output=True,
        text=True,
        env={**os.environ, "MANWIDTH": "80", "MANPAGER": "cat", "PAGER": "cat"},
    )
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr.lower(), result.stderr
    assert "GIT-KEEPSAKE(1)" in result.stdout
    assert "git keepsake ls" in result.stdout


def test_wheel_installs_the_manpage(tmp_path):
    source = tmp_path / "source"  # a copy: building in place would leave build/ in the work tree
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    out = tmp_path / "wheel"
    # Fail fast rather than wait on a registry that can't be reached.
    env = {**os.environ, "PIP_TIMEOUT": "5", "PIP_DEFAULT_TIMEOUT": "5", "PIP_RETRIES": "0"}
    errors = []
    # With the venv's own setuptools when it can build wheels, else in pip's isolated build env.
    for isolation in (["--no-build-isolation"], []):
        command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation]
        try:
            result = subprocess.run(
                [*command, "-w", str(out), str(source)],
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
            )
        except subprocess.TimeoutExpired:
            errors.append(f"{' '.join(isolation) or 'isolated build'}: timed out")
            continue
        if result.returncode == 0:
            break
        errors.append(f"{' '.join(isolation) or 'isolated build'}: {result.stderr[-300:]}")
    else:
        pytest.skip("could not build a wheel here:\n" + "\n".join(errors))
    (wheel,) = out.glob("git_keepsake-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        pages = [n for n in archive.namelist() if n.endswith(".data/" + IN_WHEEL)]
        assert pages == [f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.data/{IN_WHEEL}"]
        assert archive.read(pages[0]) == MANPAGE.read_bytes()
