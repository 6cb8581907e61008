"""Sharing experiments through a git remote: `git keepsake pull` and `git keepsake push`.

Pull fetches the remote's keepsake refs aside and merges them (git/remote.py, GitRepo.
adopt_fetched), then rebuilds the notes from the refs: the notes are only a view of the refs,
so a notes conflict is settled by rebuilding, never by asking. Push first finishes the uploads
of runs that ended early (recovery.py), so a pushed ref's blobs are in storage (invariant 3),
then pulls, so that the rebuilt notes hold the remote's lines too, then pushes the refs, and
the notes with a lease: if someone pushed notes meanwhile, it pulls and tries again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import ConfigError, KeepsakeError, StorageError
from .git import remote as git_remote
from .git.refs import NOTES_REF, fetched_notes_ref
from .recovery import Recovered, recover
from .store.publish import rebuild_notes
from .workspace import Workspace

if TYPE_CHECKING:
    from .git.repo import GitRepo

PUSH_ATTEMPTS = 3


@dataclass
class Pulled:
    created: int  # experiments new here
    updated: int  # experiments whose metadata moved forward
    not_adopted: int = 0  # experiments removed here, which the remote has: not brought back
    notes_problem: str | None = None  # why the notes could not be rebuilt (storage down)


def not_adopted_line(count: int, remote: str) -> str | None:
    """What pull and push say of the experiments they left out as removed here (None: none)."""
    if not count:
        return None
    which = "" if remote == "origin" else f" {remote}"
    return (
        f"{count} experiment(s) removed here were not brought back from {remote} (to bring "
        f"them back: git keepsake pull --include-removed{which})"
    )


@dataclass
class Pushed:
    experiments: int  # experiments in git here, now on the remote too
    recovered: list[Recovered] = field(default_factory=list)
    not_adopted: int = 0  # as in Pulled
    upload_problem: str | None = None  # why some runs' uploads could not be finished
    notes_problem: str | None = None  # why the notes were not pushed


def pull(project: Workspace, remote: str, include_removed: bool = False) -> Pulled:
    """Experiments removed here (tombstones.py) are not brought back, unless `include_removed`,
    which drops their tombstones."""
    git = _git(project, remote)
    git_remote.fetch(project.directory, remote)
    removed = project.tombstones.ids()
    created, updated, skipped = git.adopt_fetched(remote, () if include_removed else removed)
    here = set(git.metadata_refs())
    if include_removed:
        project.tombstones.discard(removed & here)
    pulled = Pulled(created, updated, len(skipped - here))
    try:
        notes_from_refs(project, git)  # the listing it needs reads blob storage too
    except StorageError as e:
        pulled.notes_problem = e.message
    return pulled


def notes_from_refs(project: Workspace, git: GitRepo) -> int:
    """Rebuild the notes from the experiments in git: they are a view of the refs."""
    catalog = project.catalog
    return rebuild_notes(git, catalog.list(), set(catalog.metadata_refs()))


def push(project: Workspace, remote: str) -> Pushed:
    git = _git(project, remote)
    pushed = Pushed(0)
    try:
        pushed.recovered = recover(project)
    except KeepsakeError as e:  # the refs stay safe to push: metadata names stored blobs only
        pushed.upload_problem = e.message
    for attempt in range(1, PUSH_ATTEMPTS + 1):
        pulled = pull(project, remote)
        pushed.notes_problem = pulled.notes_problem  # then the refs go, the notes next time
        pushed.not_adopted = pulled.not_adopted
        lease = git.ref_target(fetched_notes_ref(remote))
        notes = not pulled.notes_problem and git.ref_target(NOTES_REF) is not None
        try:
            git_remote.push(project.directory, remote, lease, push_notes=notes)
            break
        except KeepsakeError as e:
            if "stale info" not in e.message or attempt == PUSH_ATTEMPTS:
                raise  # not a race with another pusher's notes
    pushed.experiments = len(git.metadata_refs())
    return pushed


def _git(project: Workspace, remote: str) -> GitRepo:
    if not project.is_own_repository:
        raise ConfigError(
            f"{project.repository.url} is not this project's repository: push and pull share "
            "the project's git refs, which are about its own repository only",
            hint="run it without -R",
        )
    git = project.git
    if git is None:
        raise ConfigError(
            f"{project.directory} is not in a git repository",
            hint="experiments are shared through git; outside git, share the repository URL",
        )
    is_url = "/" in remote or ":" in remote  # `git push URL` names no remote
    if not is_url and remote not in git.repo.remotes.names():
        known = ", ".join(git.repo.remotes.names()) or "none"
        raise ConfigError(
            f"there is no git remote {remote!r} (remotes: {known})",
            hint=f"add one with `git remote add {remote} URL`, or name another",
        )
    return git
