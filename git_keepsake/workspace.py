"""A project's resources, found and opened on first use: its directory and settings, its
repository, its git repository, its staging writer and heartbeat, its catalog. Everything
below the public API takes a Workspace; `Project` (the API's) is one.
"""

from __future__ import annotations

import hashlib
import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .catalog import Catalog
from .config import (
    CONFIG_NAMES,
    DEFAULT_MAX_FILE_SIZE,
    DEFAULT_REPOSITORY,
    find_config,
    find_git_dir,
    load_config,
)
from .errors import ConfigError, GitError, KeepsakeError
from .records import ExperimentRecord
from .runtime import warn_or_raise
from .storage import open_storage
from .store.layout import Repository
from .tombstones import Tombstones

if TYPE_CHECKING:
    from .git.repo import GitRepo
    from .snapshot import IgnoreRules
    from .store.heartbeat import Heartbeat
    from .store.writer import Writer


class Workspace:
    """A codebase and the repository its experiments are recorded in.

    Nothing is resolved until first used, so constructing one never fails or touches disk.
    """

    # What the catalog builds from metadata: `Project` sets the API's Experiment here.
    experiment_type: type[ExperimentRecord] = ExperimentRecord

    def __init__(self, repository: str | None = None, directory: str | os.PathLike | None = None):
        self._repository_arg = repository
        self._directory_arg = directory

    @cached_property
    def _resolved(self) -> tuple[Path, str, Path | None, dict[str, Any]]:
        """(project dir, repository URL, config file, its settings)."""
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
        url = self._repository_arg or _configured_url(settings)
        return directory, url, config, settings

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
    def is_own_repository(self) -> bool:
        """Whether the repository is the project's own (from keepsake.yaml, or the default),
        not another one named by `-R URL` or `Project(repository=...)`.

        The project's git refs and local state (staging, tombstones, the index) are about its
        own repository: with another one they are left out, so that `ls -R URL` lists what is
        at URL and `rm -R URL` deletes from URL alone. Naming the project's own repository
        with -R is the same as not naming it (git refs included): there they are its index.
        """
        if self._repository_arg is None:
            return True
        named = self.repository.url
        directory, _, _, settings = self._resolved
        try:
            return open_storage(_configured_url(settings), directory).url == named
        except ConfigError:
            return False  # a broken keepsake.yaml names no repository

    @cached_property
    def git(self) -> GitRepo | None:
        """The git repository holding the project; None outside git (blob storage only), and
        for a repository other than the project's own (see is_own_repository)."""
        if not self.git_dirs or not self.is_own_repository:
            return None
        from .git.repo import GitRepo

        return GitRepo.open(self.directory, *self.git_dirs)

    @property
    def git_max_file_size(self) -> int:
        return self._resolved[3].get("git_max_file_size", DEFAULT_MAX_FILE_SIZE)

    @cached_property
    def catalog(self) -> Catalog:
        git_dir = self.git_dirs[1] if self.git_dirs and self.is_own_repository else None
        return Catalog(
            self.repository, git_dir, lambda: self.git, self.state_dir, self._build_experiment
        )

    def _build_experiment(self, data: dict[str, Any], lazy=None) -> ExperimentRecord:
        return self.experiment_type.from_json(self, data, lazy)

    def is_running(self, experiment_id: str) -> bool:
        """Whether the experiment's heartbeat is fresh (False if it can't be read)."""
        try:
            return self.repository.is_running(experiment_id)
        except KeepsakeError:
            return False

    @cached_property
    def git_dirs(self) -> tuple[Path, Path] | None:
        """(work tree root, common git dir) if the project is inside a git work tree: found
        once, here, for everything in the project."""
        return find_git_dir(self.directory)

    @cached_property
    def state_dir(self) -> Path:
        """Local, private working space (staging, journal, tombstones, the index): in .git
        when there is one; for another repository than the project's own, one of its own."""
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "git-keepsake"
        if not self.is_own_repository:
            digest = hashlib.sha1(self.repository.url.encode()).hexdigest()[:16]
            return cache / "repositories" / digest
        if self.git_dirs:
            return self.git_dirs[1] / "keepsake"
        digest = hashlib.sha1(str(self.directory).encode()).hexdigest()[:16]
        return cache / "projects" / digest

    @cached_property
    def tombstones(self) -> Tombstones:
        """The experiments removed here, which a pull does not bring back."""
        return Tombstones(self.state_dir / "removed")

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
        from .store.writer import Writer

        return Writer(self.repository, self.state_dir / "staging")

    @cached_property
    def heartbeat(self) -> Heartbeat:
        from .store.heartbeat import Heartbeat

        return Heartbeat(self.repository)

    @cached_property
    def ignore_rules(self) -> IgnoreRules:
        from .snapshot import IgnoreRules

        if not self.git_dirs:
            return IgnoreRules(self.directory)
        work_tree, common = self.git_dirs
        return IgnoreRules(self.directory, work_tree=str(work_tree), common_git_dir=str(common))

    def snapshot_files(self, rel: str) -> list[str]:
        """Files under a project-relative folder that belong in a snapshot (ignore rules applied).

        A repository folder inside the project is never snapshotted, whatever its name.
        """
        from .snapshot import list_files

        rules = self.ignore_rules
        files = list_files(self.directory, rel, rules)
        tracked = self._tracked_files(rel)
        if tracked:
            # As git does: a tracked file stays even when a .gitignore line matches it.
            listed = set(files)
            for path in tracked:
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

    def _tracked_files(self, rel: str) -> list[str]:
        """The files git tracks under `rel`; none (with a warning) if git can't say: a broken
        .git/index must not cost a checkpoint its files."""
        if self.git is None:
            return []
        try:
            return self.git.tracked_files(rel)
        except GitError as e:
            warn_or_raise(e, "; snapshotting the files that are not ignored")
            return []


def _configured_url(settings: dict[str, Any]) -> str:
    return settings.get("repository") or settings.get("storage") or DEFAULT_REPOSITORY
