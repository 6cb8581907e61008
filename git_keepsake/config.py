"""keepsake.yaml, and finding a project's directory and git repository from a folder in it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ConfigError

CONFIG_NAMES = ("keepsake.yaml", "keepsake.yml")
CONFIG_KEYS = ("repository", "storage", "git_max_file_size")
SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2}
SIZE_UNITS |= {"mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3}
DEFAULT_REPOSITORY = "file://.keepsake"
DEFAULT_MAX_FILE_SIZE = 5 * 1024 * 1024  # git_max_file_size: untracked files above stay out of git


def find_config(start: Path) -> Path | None:
    """keepsake.yaml or keepsake.yml in `start` or the nearest folder above it."""
    for folder in (start, *start.parents):
        for name in CONFIG_NAMES:
            candidate = folder / name
            if candidate.is_file():
                return candidate
    return None


def find_git_dir(start: Path) -> tuple[Path, Path] | None:
    """(work tree root, common git dir) of the git repository whose work tree holds `start`,
    found without git itself (the one place that looks). `.git` may be a file (`gitdir: ...`)
    in linked worktrees and submodules; the common dir, shared by all worktrees, holds refs/,
    objects/ and info/."""
    for folder in (start, *start.parents):
        dot_git = folder / ".git"
        if dot_git.is_dir():
            return folder, _common_dir(dot_git)
        if dot_git.is_file():
            text = dot_git.read_text(errors="replace").strip()
            if text.startswith("gitdir:"):
                git_dir = (folder / text[len("gitdir:") :].strip()).resolve()
                return folder, _common_dir(git_dir)
    return None


def _common_dir(git_dir: Path) -> Path:
    commondir = git_dir / "commondir"
    if commondir.is_file():
        return (git_dir / commondir.read_text().strip()).resolve()
    return git_dir


EXAMPLE = 'e.g. repository: "file://.keepsake"'


def load_config(path: Path) -> dict[str, Any]:
    import yaml  # only when there is a config file: keeps `import git_keepsake` light

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise ConfigError(
            f"{path} could not be read: {e.strerror or e}", hint="check its permissions"
        ) from e
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte {e.start})", hint="save it as UTF-8"
        ) from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ConfigError(
            f"{path} is not valid YAML{line}: {problem}", hint=f"fix it, {EXAMPLE}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must be a mapping of settings", hint=EXAMPLE)
    unknown = sorted(str(k) for k in data if k not in CONFIG_KEYS)
    if unknown:
        raise ConfigError(
            f"{path} has unknown setting(s): {', '.join(unknown)}",
            hint=f"known settings: {', '.join(CONFIG_KEYS)}",
        )
    for key, value in data.items():
        if key == "git_max_file_size":
            data[key] = parse_size(value, path)
        elif not isinstance(value, str) or not value:
            raise ConfigError(
                f"{path}: {key} must be a non-empty string, not {value!r:.40}", hint=EXAMPLE
            )
    if "repository" in data and "storage" in data:
        raise ConfigError(
            f"{path} sets both repository and storage",
            hint="keep only repository",
        )
    return data


def parse_size(value: Any, where: Path) -> int:
    """A size in bytes from 5000000, "5MB", "20 MiB" or "500k"."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    text = str(value).strip().lower().replace(" ", "")
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(number) :]
    try:
        size = int(float(number) * SIZE_UNITS[unit])
    except (ValueError, KeyError, OverflowError):
        raise ConfigError(
            f"{where}: git_max_file_size must be a size, not {value!r}",
            hint='e.g. git_max_file_size: "20MB" (untracked files above it stay out of git)',
        ) from None
    if size < 0:
        raise ConfigError(
            f"{where}: git_max_file_size must not be negative, not {value!r}",
            hint='e.g. git_max_file_size: "20MB"',
        )
    return size
