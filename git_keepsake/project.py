"""Finds the project directory and keepsake.yaml, and owns the project's repository and writer."""

from __future__ import annotations

import hashlib
import os
import threading
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .repository import Repository
from .storage import open_storage

if TYPE_CHECKING:
    from .catalog import Catalog
    from .checkpoint import CheckpointCollection
    from .experiment import ExperimentCollection
    from .git.repo import GitRepo
    from .heartbeat import Heartbeat
    from .snapshot import IgnoreRules
    from .writer import Writer

CONFIG_NAMES = ("keepsake.yaml", "keepsake.yml")
CONFIG_KEYS = ("repository", "storage", "git_max_file_size")
SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2}
SIZE_UNITS |= {"mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3}
DEFAULT_REPOSITORY = "file://.keepsake"


def find_config(start: Path) -> Path | None:
    """keepsake.yaml or keepsake.yml in `start` or the nearest folder above it."""
    for folder in (start, *start.parents):
        for name in CONFIG_NAMES:
            candidate = folder / name
            if candidate.is_file():
                return candidate
    return None


def find_git_dir(start: Path) -> tuple[Path, Path] | None:
    """(work tree root, git dir) of the repository containing `start`, found without git itself.

    `.git` may be a file (`gitdir: ...`) in linked worktrees and submodules.
    """
    for folder in (start, *start.parents):
        dot_git = folder / ".git"
        if dot_git.is_dir():
            return folder, dot_git
        if dot_git.is_file():
            text = dot_git.read_text(errors="replace").strip()
            if text.startswith("gitdir:"):
                return folder, (folder / text[len("gitdir:") :].strip()).resolve()
    return None


def common_git_dir(git_dir: Path) -> Path:
    """The folder shared by all worktrees of a repository (it holds info/, refs/, objects/)."""
    commondir = git_dir / "commondir"
    if commondir.is_file():
        return (git_dir / commondir.read_text().strip()).resolve()
    return git_dir


def load_config(path: Path) -> dict[str, Any]:
    import yaml  # only when there is a config file: keeps `import git_keepsake` light

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path} could not be read: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path} must be a mapping of settings", hint='e.g. repository: "file://.keepsake"'
        )
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
            raise ConfigError(f"{path}: {key} must be a non-empty string, not {value!r}")
    if "repository" in data and "storage" in data:
        raise ConfigError(f"{path} sets both repository and storage; keep only repository")
    return data


def parse_size(value: Any, where: Path) -> int:
    """A size in bytes from 5000000, "5MB", "20 MiB" or "500k"."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    text = str(value).strip().lower().replace(" ", "")
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(number) :]
    try:
        size = float(number) * SIZE_UNITS[unit]
    except (ValueError, KeyError):
        raise ConfigError(
            f"{where}: git_max_file_size must be a size, not {value!r}",
            hint='e.g. git_max_file_size: "20MB" (untracked files above it stay out of git)',
        ) from None
    if size < 0:
        raise ConfigError(f"{where}: git_max_file_size must not be negative, not {value!r}")
    return int(size)


class Project:
    """A codebase and the repository its experiments are recorded in.

    Nothing is resolved until first used, so constructing one never fails or touches disk.
    """

    def __init__(self, repository: str | None = None, directory: str | os.PathLike | None = None):
        self._repository_arg = repository
        self._directory_arg = directory
        self._lock = threading.Lock()

    @cached_property
    def _resolved(self) -> tuple[Path, str, Path | None]:
        """(project dir, repository URL, config file)."""
        if self._directory_arg is not None:
            directory = Path(self._directory_arg).resolve()
            if not directory.is_dir():
                raise ConfigError(f"project directory {directory} does not exist")
            config = next((directory / n for n in CONFIG_NAMES if (directory / n).is_file()), None)
        else:
            cwd = Path.cwd().resolve()
            config = find_config(cwd)
            if config is not None:
                directory = config.parent
            else:
                git = find_git_dir(cwd)
                directory = git[0] if git else cwd
        settings = load_config(config) if config else {}
        url = (
            self._repository_arg
            or settings.get("repository")
            or settings.get("storage")
            or DEFAULT_REPOSITORY
        )
        self._settings = settings
        return directory, url, config

    @property
    def directory(self) -> Path:
        return self._resolved[0]

    @property
    def repository_url(self) -> str:
        """The URL as configured (relative file:// URLs stay relative)."""
        return self._resolved[1]

    @cached_property
    def repository(self) -> Repository:
        try:
            storage = open_storage(self.repository_url, self.directory)
        except ConfigError as e:
            where = self._resolved[2]
            if where is not None and not self._repository_arg:
                e.message = f"{where}: {e.message}"
            raise
        return Repository(storage)

    @cached_property
    def git(self) -> GitRepo | None:
        """The git repository holding the project; None outside git (blob storage only)."""
        if not self.git_dirs:
            return None
        from .git.repo import GitRepo

        return GitRepo.open(self.directory, self.git_dirs[1])

    @property
    def git_max_file_size(self) -> int:
        from .git.repo import DEFAULT_MAX_FILE_SIZE

        _ = self._resolved
        return self._settings.get("git_max_file_size", DEFAULT_MAX_FILE_SIZE)

    @cached_property
    def catalog(self) -> Catalog:
        from .catalog import Catalog

        return Catalog(self)

    @cached_property
    def git_dirs(self) -> tuple[Path, Path] | None:
        """(work tree root, common git dir) if the project is inside a git work tree."""
        found = find_git_dir(self.directory)
        return (found[0], common_git_dir(found[1])) if found else None

    @cached_property
    def state_dir(self) -> Path:
        """Local, private working space (staging, journal): in .git when there is one."""
        if self.git_dirs:
            return self.git_dirs[1] / "keepsake"
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        digest = hashlib.sha1(str(self.directory).encode()).hexdigest()[:16]
        return cache / "git-keepsake" / "projects" / digest

    def local_repository_dir(self) -> Path | None:
        local = self.repository.storage.local_path("")
        return local.resolve() if local is not None else None

    def keep_repository_out_of_git(self) -> None:
        """Add a repository folder inside the work tree to .git/info/exclude (once)."""
        local = self.local_repository_dir()
        if not self.git_dirs or local is None:
            return
        work_tree, git_dir = self.git_dirs
        try:
            rel = local.relative_to(work_tree).as_posix()
        except ValueError:
            return
        exclude = git_dir / "info" / "exclude"
        line = f"/{rel}/"
        try:
            existing = exclude.read_text() if exclude.exists() else ""
            if line not in existing.splitlines():
                exclude.parent.mkdir(parents=True, exist_ok=True)
                sep = "" if not existing or existing.endswith("\n") else "\n"
                with open(exclude, "a") as f:
                    f.write(f"{sep}# git-keepsake repository\n{line}\n")
        except OSError:
            pass  # a read-only .git must not stop training

    @cached_property
    def writer(self) -> Writer:
        from .writer import Writer

        return Writer(self.repository, self.state_dir / "staging")

    @cached_property
    def heartbeat(self) -> Heartbeat:
        from .heartbeat import Heartbeat

        return Heartbeat(self.repository)

    @cached_property
    def ignore_rules(self) -> IgnoreRules:
        from .snapshot import IgnoreRules

        if not self.git_dirs:
            return IgnoreRules(self.directory)
        work_tree, common = self.git_dirs  # found once, here, for everything in the project
        return IgnoreRules(self.directory, work_tree=str(work_tree), common_git_dir=str(common))

    def snapshot_files(self, rel: str) -> list[str]:
        """Files under a project-relative folder that belong in a snapshot (ignore rules applied).

        A repository folder inside the project is never snapshotted, whatever its name.
        """
        from .snapshot import list_files

        rules = self.ignore_rules
        files = list_files(self.directory, rel, rules)
        if self.git is not None:
            # As git does: a tracked file stays even when a .gitignore line matches it.
            listed = set(files)
            for path in self.git.tracked_files(rel):
                if (
                    path not in listed
                    and not rules.is_keepsake_ignored(path)
                    and (self.directory / path).is_file()
                ):
                    files.append(path)
            files.sort()
        local = self.local_repository_dir()
        if local is not None and self.directory in local.parents:
            skip = local.relative_to(self.directory).as_posix() + "/"
            files = [f for f in files if not f.startswith(skip)]
        return files

    @property
    def experiments(self) -> ExperimentCollection:
        from .experiment import ExperimentCollection

        return ExperimentCollection(self)

    @property
    def checkpoints(self) -> CheckpointCollection:
        from .checkpoint import CheckpointCollection

        return CheckpointCollection(self)
