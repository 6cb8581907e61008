"""Fields of recorded experiments as Keepsake 0.4.2 had them (issue 14)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .conftest import keepsake_cli
from .reference import reference_venv, requires_keepsake

SCRIPT = """
import sys
sys.path.insert(0, {src!r})
import {module} as keepsake
experiment = keepsake.init(params={{"lr": 0.1}})
experiment.stop()
print(experiment.id)
"""


def _run(python: str, module: str, cwd: Path, src: str = "") -> dict:
    import subprocess

    (cwd / "train.py").write_text(SCRIPT.format(src=src, module=module))
    done = subprocess.run(
        [python, "train.py", "--foo", "a b"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"KEEPSAKE_NO_ANALYTICS": "1", "PATH": "/usr/bin:/bin", "HOME": str(cwd)},
    )
    assert done.returncode == 0, done.stderr
    experiment_id = done.stdout.split()[-1]
    path = cwd / ".keepsake" / "metadata" / "experiments" / f"{experiment_id}.json"
    return json.loads(path.read_text())


@requires_keepsake
def test_command_is_what_keepsake_records_and_command_line_reruns_it(tmp_path):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for folder in (ours, theirs):
        folder.mkdir()
        (folder / "keepsake.yaml").write_text('repository: "file://.keepsake"\n')
    venv = reference_venv()
    assert venv is not None
    theirs_json = _run(str(venv / "bin" / "python"), "keepsake", theirs)
    src = str(Path(__file__).resolve().parents[1])
    ours_json = _run(sys.executable, "git_keepsake", ours, src)
    assert theirs_json["command"] == "train.py --foo 'a b'"
    assert ours_json["command"] == theirs_json["command"]
    assert ours_json["command_line"] == f"{sys.executable} train.py --foo 'a b'"
    # Keepsake 0.4.2 reads our repository, extra field and all.
    shown = json.loads(keepsake_cli_042("show", "--json", ours_json["id"][:7], cwd=ours))
    assert shown["command"] == "train.py --foo 'a b'"


def keepsake_cli_042(*args: str, cwd: Path) -> str:
    from .reference import keepsake_cli as reference_cli

    return reference_cli(*args, cwd=cwd)


__all__ = ["keepsake_cli"]
