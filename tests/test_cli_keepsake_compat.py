"""Keepsake 0.4.2's CLI habits, run as real processes: piped checkout answers, global flags
after the command, and `ps` with nothing running."""

from __future__ import annotations

import subprocess

import pytest

from .conftest import GIT_KEEPSAKE, keepsake_cli
from .test_checkout import record_weights, state


@pytest.fixture
def changed(project):
    """A recorded experiment, then model.pth and train.py changed."""
    (project / "train.py").write_text("v1\n")
    experiment, _ = record_weights(project, [(0.5, b"weights")])
    (project / "train.py").write_text("v2\n")
    (project / "model.pth").write_bytes(b"retrained")
    return experiment


def checkout(experiment, project, stdin: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [GIT_KEEPSAKE, "checkout", experiment.id],
        cwd=project,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_piped_yes_checks_out(changed, project):
    result = checkout(changed, project, "y\n")
    assert result.returncode == 0, result.stderr
    assert "Overwrite 2 changed file(s)? [y/N]: y\n" in result.stderr
    assert "2 file(s) written" in result.stderr
    assert (project / "train.py").read_text() == "v1\n"
    assert (project / "model.pth").read_bytes() == b"weights"


def test_piped_no_refuses_and_writes_nothing(changed, project):
    before = state(project)
    result = checkout(changed, project, "n\n")
    assert result.returncode == 1
    assert result.stderr.endswith(
        "Overwrite 2 changed file(s)? [y/N]: n\nerror: checkout cancelled: nothing was written\n"
    )
    assert state(project) == before


def test_empty_stdin_refuses_with_one_error(changed, project):
    before = state(project)
    result = checkout(changed, project, "")
    assert result.returncode == 1
    assert result.stderr.endswith(
        f"error: 2 file(s) in {project} would be overwritten\nhint: use -f to overwrite them\n"
    )
    assert "Traceback" not in result.stderr
    assert state(project) == before


@pytest.mark.parametrize(
    "args",
    [
        ["-v", "ls", "-q"],
        ["ls", "-q", "-v"],
        ["--verbose", "ls", "-q"],
        ["ls", "-q", "--verbose"],
        ["--no-color", "ls", "-q"],
        ["ls", "-q", "--no-color"],
        ["-D", ".", "ls", "-q"],
        ["ls", "-q", "-D", "."],
        ["-R", "file://.keepsake", "ls", "-q"],
        ["ls", "-q", "-R", "file://.keepsake"],
    ],
)
def test_global_flags_before_or_after_the_command(project, args):
    experiment, _ = record_weights(project, [(0.5, b"w")])
    assert keepsake_cli(*args, cwd=project).stdout == experiment.id + "\n"


def test_global_flags_after_the_command_in_keepsake_too(project):
    """The reference: cobra's persistent flags are taken after the command as well."""
    import os

    keepsake = os.path.join(os.environ["GIT_KEEPSAKE_REFERENCE_VENV"], "bin", "keepsake")
    (project / "keepsake.yaml").write_text('repository: "file://.keepsake"\n')
    for args in (["-v", "ls", "-q"], ["ls", "-q", "-v"]):
        result = subprocess.run([keepsake, *args], cwd=project, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def test_ps_with_nothing_running(project):
    for command in ("ps", "processes"):
        result = keepsake_cli(command, cwd=project)
        assert (result.stdout, result.stderr) == ("no running experiments\n", "")
    record_weights(project, [(0.5, b"w")])[0].stop()
    result = keepsake_cli("ps", cwd=project)
    assert (result.stdout, result.stderr) == ("no running experiments\n", "")
