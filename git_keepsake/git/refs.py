"""Every ref name git-keepsake uses (one module owns them all), the `ExperimentRef` value object
that prints and parses them, and reading refs straight from the files (no pygit2 import).

`git keepsake ls` with a warm cache needs nothing from git but the metadata refs' targets:
reading `packed-refs` and the loose ref files is a few milliseconds for 10,000 refs, while
importing pygit2 alone costs about 50 ms. Anything else goes through `repo.py`.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ..metadata import is_id

NAMESPACE = "refs/keepsake/"
EXPERIMENTS_REFS = NAMESPACE + "experiments/"  # -> the snapshot commit, written once
METADATA_REFS = NAMESPACE + "metadata/"  # -> the metadata commit, moved as checkpoints arrive
NOTES_REF = "refs/notes/keepsake"
# A remote's refs are fetched aside, under FETCHED + <remote>/ (see git/remote.py).
FETCHED = "refs/keepsake-fetched/"
KINDS = ("experiments", "metadata")
_HEX = frozenset("0123456789abcdef")
# git holds a ref's lock file for milliseconds; one this old was left by a process killed
# while it held it (a SIGKILLed `git keepsake rm`), and blocks that ref for good.
STALE_LOCK_SECONDS = 10.0


@dataclass(frozen=True)
class ExperimentRef:
    """One of an experiment's two refs, here or as fetched from a remote (in the manner of
    DVC's ExpRefInfo): `str()` gives the ref name, `from_ref()` reads one back.

        refs/keepsake/<kind>/<id>
        refs/keepsake-fetched/<remote>/keepsake/<kind>/<id>
    """

    kind: str  # "experiments" (the snapshot commit) or "metadata"
    experiment_id: str
    remote: str | None = None  # fetched from this remote (see fetched_prefix), else local

    def __str__(self) -> str:
        base = fetched_prefix(self.remote) + "keepsake/" if self.remote else NAMESPACE
        return f"{base}{self.kind}/{self.experiment_id}"

    @classmethod
    def snapshot(cls, experiment_id: str) -> ExperimentRef:
        return cls("experiments", experiment_id)

    @classmethod
    def metadata(cls, experiment_id: str) -> ExperimentRef:
        return cls("metadata", experiment_id)

    @classmethod
    def from_ref(cls, name: str) -> ExperimentRef | None:
        """The ref `name` names, or None if it is not an experiment ref."""
        remote = None
        if name.startswith(FETCHED):
            remote, sep, rest = name[len(FETCHED) :].partition("/keepsake/")
            if not sep:
                return None
        elif name.startswith(NAMESPACE):
            rest = name[len(NAMESPACE) :]
        else:
            return None
        kind, _, experiment_id = rest.partition("/")
        if kind not in KINDS or not is_id(experiment_id):
            return None  # a remote's refs are untrusted: an ID is 64 hex characters or nothing
        return cls(kind, experiment_id, remote)

    def local(self) -> ExperimentRef:
        """The same ref in this repository's own namespace."""
        return ExperimentRef(self.kind, self.experiment_id)

    @property
    def is_metadata(self) -> bool:
        return self.kind == "metadata"


def fetched_prefix(remote: str) -> str:
    """Where a remote's refs are fetched to. `git push URL` names a URL, not a remote, and a
    URL can't be part of a ref name: it stands there as a hash."""
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)*", remote):
        remote = "url-" + hashlib.sha1(remote.encode()).hexdigest()[:12]
    return f"{FETCHED}{remote}/"


def fetched_notes_ref(remote: str) -> str:
    return fetched_prefix(remote) + "notes/keepsake"


def read_refs(common_dir: Path, prefix: str) -> dict[str, str] | None:
    """{name below `prefix`: object id} of the refs under `prefix` (e.g. "refs/keepsake/
    metadata/"); None when the repository stores refs some other way (reftable)."""
    if (common_dir / "reftable").is_dir():
        return None
    # Loose refs first, then packed-refs: `git pack-refs` writes packed-refs before it deletes
    # the loose files, so a ref being packed meanwhile is seen in one or the other.
    loose: dict[str, str] = {}
    base = common_dir / prefix.rstrip("/")
    for folder, _dirs, files in os.walk(base):
        rel = os.path.relpath(folder, base)
        for file in files:
            if file.endswith(".lock"):
                continue  # being written: the previous value stands
            try:
                sha = (Path(folder) / file).read_text().strip()
            except (FileNotFoundError, IsADirectoryError):
                continue  # deleted or packed while we looked
            if len(sha) in (40, 64) and set(sha) <= _HEX:
                loose[file if rel == "." else f"{rel}/{file}".replace(os.sep, "/")] = sha
    out: dict[str, str] = {}
    try:
        with open(common_dir / "packed-refs", encoding="utf-8", errors="replace") as f:
            for line in f:
                # "<sha> <name>", with "# pack-refs" headers and "^<peeled sha>" lines.
                if line.startswith(("#", "^")):
                    continue
                sha, _, name = line.rstrip("\n").partition(" ")
                if name.startswith(prefix) and len(sha) in (40, 64):
                    out[name[len(prefix) :]] = sha
    except FileNotFoundError:
        pass
    out.update(loose)  # a loose ref is newer than its packed copy
    return out


def lock_files(common_dir: Path, ref_name: str) -> list[Path]:
    """The lock files that exist and block updating or deleting `ref_name`: its own, and
    packed-refs' (deleting a packed ref rewrites packed-refs)."""
    candidates = [common_dir / f"{ref_name}.lock", common_dir / "packed-refs.lock"]
    return [p for p in candidates if p.exists()]


def remove_stale_locks(common_dir: Path, ref_name: str) -> bool:
    """Remove the lock files blocking `ref_name` that a killed process left behind: older
    than STALE_LOCK_SECONDS and held open by no process this user can see. True if any
    was removed (the update is worth trying again)."""
    removed = False
    for lock in lock_files(common_dir, ref_name):
        try:
            age = time.time() - lock.stat().st_mtime
            if age < STALE_LOCK_SECONDS or _held_open(lock):
                continue
            lock.unlink()
            removed = True
        except FileNotFoundError:
            removed = True  # its owner finished meanwhile
    return removed


def _held_open(path: Path) -> bool:
    """Whether some process has `path` open (Linux /proc; elsewhere, age alone decides)."""
    target = str(path.resolve())
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return False
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue  # gone, or another user's
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return True
            except OSError:
                continue
    return False
