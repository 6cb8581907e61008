"""The original Keepsake 0.4.2, installed in a side venv by .ci/run; tests skip without it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

_CANDIDATES = [
    os.environ.get("GIT_KEEPSAKE_REFERENCE_VENV", ""),
    str(Path(__file__).resolve().parents[1] / ".ci" / "keepsake-0.4.2"),
]


def reference_venv() -> Path | None:
    for candidate in _CANDIDATES:
        if candidate and (Path(candidate) / "bin" / "keepsake").is_file():
            return Path(candidate)
    return None


requires_keepsake = pytest.mark.skipif(
    reference_venv() is None,
    reason="Keepsake 0.4.2 side venv not found (bash .ci/run builds it)",
)


def _env() -> dict[str, str]:
    # Keepsake 0.4.2 phones home unless told not to; tests never reach the internet.
    return {**os.environ, "KEEPSAKE_NO_ANALYTICS": "1"}


def keepsake_cli(*args: str, cwd: Path) -> str:
    venv = reference_venv()
    assert venv is not None
    result = subprocess.run(
        [str(venv / "bin" / "keepsake"), *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"keepsake {' '.join(args)} failed:\n{result.stderr}"
    return result.stdout


def keepsake_python(code: str, cwd: Path) -> str:
    venv = reference_venv()
    assert venv is not None
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"keepsake python failed:\n{result.stderr}"
    return result.stdout
