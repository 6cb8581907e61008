"""Experiments in git: a snapshot commit per experiment, and its metadata kept current beside it.

Two refs per experiment, both owned by the process that started it:

- `refs/keepsake/experiments/<id>` -> the *snapshot commit*, written once at `init()`. Its tree is
  HEAD's tree with `path` replaced by the work tree as it was (tracked files with their
  uncommitted changes, untracked files that are not ignored); its parent is HEAD. So
  `git diff HEAD <snapshot>` is exactly what was uncommitted, and `git diff <a> <b>` compares two
  experiments' code. It never changes, so its id can be recorded in the experiment JSON.
- `refs/keepsake/metadata/<id>` -> a *metadata commit*: the snapshot tree plus one file,
  `.keepsake/experiment.json` (the same bytes as the blob-storage JSON, checkpoints included), with
  the snapshot commit as parent. Each update makes three small objects (blob, root tree, commit)
  and moves the ref by compare-and-swap. Reading one experiment is four object lookups and one
  small JSON blob, and listing reads one ref per experiment, which is why the metadata is a file
  in a commit rather than a chain of commits (a reader would have to walk it) or a note (one
  notes tree shared by every writer would conflict). Superseded metadata commits are unreachable
  and go with `git gc`; updates are throttled by the writer, so a long run leaves little behind.

Nothing here touches HEAD, the index file, the work tree or the stash: trees are built in an
in-memory index. Files that would bloat the object database (untracked and over a size limit)
are decided on by size before anything is hashed.
"""

from __future__ import annotations

import functools
import os
import stat
import threading
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pygit2

from ..config import DEFAULT_MAX_FILE_SIZE
from ..errors import GitError
from .refs import (
    METADATA_REFS,
    NAMESPACE,
    ExperimentRef,
    fetched_prefix,
    lock_files,
    remove_stale_locks,
)

METADATA_FILE = ".keepsake/experiment.json"

# How a file is staged, per git's own modes.
_FILE, _EXECUTABLE, _LINK = (
    pygit2.enums.FileMode.BLOB,
    pygit2.enums.FileMode.BLOB_EXECUTABLE,
    pygit2.enums.FileMode.LINK,
)
_CHANGED_IN_WORK_TREE = (
    pygit2.enums.FileStatus.WT_MODIFIED
    | pygit2.enums.FileStatus.WT_TYPECHANGE
    | pygit2.enums.FileStatus.WT_RENAMED
    | pygit2.enums.FileStatus.CONFLICTED
)
_DELETED_IN_WORK_TREE = pygit2.enums.FileStatus.WT_DELETED
# How many times a file that changes while it is read is read again before it is left out.
READ_ATTEMPTS = 5


def _git_errors(method):
    """pygit2's errors (a locked index, a corrupt object, a failed read or write) as GitError,
    with what was being done."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (pygit2.GitError, KeyError, ValueError, OSError) as e:
            raise GitError(f"git {method.__name__.replace('_', ' ')} failed: {e}") from e

    return wrapper


class RefMoved(GitError):
    """A compare-and-swap lost: someone else changed the ref in between."""


@dataclass
class Snapshot:
    commit: str  # the snapshot commit's id
    head: str | None  # HEAD's commit id (None in a repository without commits)
    branch: str | None  # HEAD's branch, None when detached
    dirty: bool  # the snapshot differs from HEAD under `path`
    left_out: list[str] = field(default_factory=list)  # untracked files over the size limit
    unstable: list[str] = field(default_factory=list)  # vanished or kept changing: left out


class _Unstable(Exception):
    """The file vanished, or kept changing, while it was being read."""


class GitRepo:
    """The git repository holding a project. All pygit2 calls go through one lock: the training
    thread snapshots while the writer thread updates metadata."""

    def __init__(self, repo: pygit2.Repository, project_dir: Path, common_dir: Path):
        self.repo = repo
        self.common_dir = common_dir  # shared by all worktrees: refs live here
        self.work_tree = Path(repo.workdir).resolve() if repo.workdir else None
        self.project_dir = project_dir
        prefix = project_dir.relative_to(self.work_tree).as_posix() if self.work_tree else "."
        self.prefix = "" if prefix == "." else prefix + "/"  # project dir in the work tree
        self._lock = threading.RLock()

    @classmethod
    def open(cls, project_dir: Path, work_tree: Path, common_dir: Path) -> GitRepo | None:
        """The repository of the work tree `work_tree` (found by config.find_git_dir), which
        holds `project_dir`; None if git can't open it."""
        try:
            repo = pygit2.Repository(str(work_tree))
        except pygit2.GitError:
            return None
        if repo.is_bare or not repo.workdir:
            return None
        if project_dir != work_tree and work_tree not in project_dir.parents:
            return None
        return cls(repo, project_dir, common_dir)

    # --- facts about HEAD ---

    def head(self) -> tuple[str | None, str | None]:
        """(HEAD commit id or None when unborn, branch name or None when detached)."""
        with self._lock:
            repo = self.repo
            branch = None
            if not repo.head_is_detached:
                target = repo.references["HEAD"].target  # symbolic: "refs/heads/main"
                if isinstance(target, str):
                    branch = target.removeprefix("refs/heads/")
            if repo.head_is_unborn:
                return None, branch
            return str(repo.head.target), branch

    def remote_url(self) -> str | None:
        """origin's URL, else the only remote's; None without remotes."""
        with self._lock:
            remotes = list(self.repo.remotes)
        by_name = {r.name: r for r in remotes}
        remote = by_name.get("origin") or (remotes[0] if len(remotes) == 1 else None)
        return remote.url if remote is not None else None

    @_git_errors
    def tracked_files(self, rel: str) -> list[str]:
        """Project-relative paths of the files in the index under project folder `rel`."""
        under = self._repo_path(rel)
        with self._lock:
            index = self.repo.index
            index.read(False)
            paths = [e.path for e in index]
        start = len(self.prefix)
        return [
            p[start:]
            for p in paths
            if p.startswith(self.prefix) and (not under or p == under or p.startswith(under + "/"))
        ]

    # --- the snapshot commit ---

    @_git_errors
    def snapshot(
        self,
        experiment_id: str,
        rel: str | None,
        files: list[str],
        message: str,
        when: float,
        max_file_size: int = DEFAULT_MAX_FILE_SIZE,
    ) -> Snapshot:
        """Commit `files` (project-relative, under project path `rel`) as the snapshot commit.

        Unchanged tracked files reuse the index's blob (no reading); changed and untracked files
        are hashed, except untracked files over `max_file_size`, which are left out (their size
        is checked first, so they never enter the object database).
        """
        with self._lock:
            repo = self.repo
            head, branch = self.head()
            head_tree = repo[head].peel(pygit2.Tree) if head else None
            index = repo.index
            index.read(False)
            tracked = {e.path: e for e in index}
            status = repo.status(untracked_files="no")

            # HEAD's tree, then `path` replaced by what is on disk (no path: HEAD's code).
            tree_index = pygit2.Index()
            under = None if rel is None else self._repo_path(rel)
            if head_tree is not None and under != "":
                tree_index.read_tree(head_tree)
                if under is not None and under in tree_index:
                    tree_index.remove(under)
                elif under is not None:
                    tree_index.remove_directory(under)

            left_out, unstable = [], []
            for rel_file in files:
                path = self.prefix + rel_file
                try:
                    entry = self._entry(path, tracked.get(path), status.get(path, 0), max_file_size)
                except _Unstable:
                    unstable.append(rel_file)
                    continue
                if entry is None:
                    left_out.append(rel_file)
                else:
                    tree_index.add(entry)
            tree = tree_index.write_tree(repo)
            # With no path, nothing was snapshotted: dirty means uncommitted tracked changes.
            changed = head_tree is None or tree != head_tree.id
            dirty = bool(status) if rel is None else changed
            signature = self.signature(when)
            commit = repo.create_commit(
                None, signature, signature, message, tree, [pygit2.Oid(hex=head)] if head else []
            )
            self._create_ref(ExperimentRef.snapshot(experiment_id), commit)
            return Snapshot(str(commit), head, branch, dirty, left_out, unstable)

    @_git_errors
    def import_snapshot(
        self,
        experiment_id: str,
        files: Iterable[tuple[str, bytes, bool]],
        parent: str | None,
        message: str,
        when: float,
    ) -> str:
        """A snapshot commit for an experiment recorded without this repository (elsewhere, or
        by Keepsake), from its tarball's files: (project-relative path, bytes, executable).
        Its tree holds those files alone; its parent is `parent` (None: a root commit). A
        snapshot ref that exists already is the experiment's own (a `git keepsake rm` killed
        between its two refs leaves it): it is kept, and its commit returned."""
        with self._lock:
            repo = self.repo
            existing = repo.references.get(str(ExperimentRef.snapshot(experiment_id)))
            if existing is not None:
                return str(existing.target)
            tree_index = pygit2.Index()
            for rel, data, executable in files:
                mode = _EXECUTABLE if executable else _FILE
                tree_index.add(pygit2.IndexEntry(self.prefix + rel, repo.create_blob(data), mode))
            signature = self.signature(when)
            parents = [pygit2.Oid(hex=parent)] if parent else []
            tree = tree_index.write_tree(repo)
            commit = repo.create_commit(None, signature, signature, message, tree, parents)
            self._create_ref(ExperimentRef.snapshot(experiment_id), commit)
            return str(commit)

    def _entry(
        self, path: str, tracked: pygit2.IndexEntry | None, flags: int, max_file_size: int
    ) -> pygit2.IndexEntry | None:
        """The file's index entry; None if it is untracked and over `max_file_size`. Another
        process may rewrite or delete the file meanwhile (parallel runs in one folder): a read
        that fails is tried again; a file that vanished or kept changing raises _Unstable. A
        read that failed every time with the file unchanged is git's failure, and is raised."""
        full = os.path.join(self.repo.workdir, path)
        if tracked is not None and not flags & (_CHANGED_IN_WORK_TREE | _DELETED_IN_WORK_TREE):
            return pygit2.IndexEntry(path, tracked.id, tracked.mode)  # as staged = as on disk
        steady: Exception | None = None  # the last failure, while the file looked unchanged
        for attempt in range(READ_ATTEMPTS):
            try:
                before = os.lstat(full)
            except OSError:
                raise _Unstable(path) from None  # gone since it was listed
            if not (stat.S_ISLNK(before.st_mode) or stat.S_ISREG(before.st_mode)):
                raise _Unstable(path)  # replaced by a folder, say
            if tracked is None and before.st_size > max_file_size:
                return None
            try:
                if stat.S_ISLNK(before.st_mode):
                    target = os.fsencode(os.readlink(full))
                    return pygit2.IndexEntry(path, self.repo.create_blob(target), _LINK)
                mode = _EXECUTABLE if before.st_mode & 0o111 else _FILE
                return pygit2.IndexEntry(path, self.repo.create_blob_fromdisk(full), mode)
            except (OSError, pygit2.GitError, KeyError) as e:  # pygit2 < 1.20: a bare KeyError
                # Timestamps tick coarsely (a few ms): a file truncated and rewritten within
                # one tick looks unchanged, so every failure is tried again; only one that
                # failed each time with the file looking unchanged is git's own.
                steady = e if _unchanged(full, before) and (attempt == 0 or steady) else None
                time.sleep(0.01 * (attempt + 1))
        if steady is not None:
            raise steady
        raise _Unstable(path)

    def _repo_path(self, rel: str) -> str:
        """A project-relative path as a work-tree-relative one ("" for the whole work tree)."""
        rel = "" if rel in ("", ".") else rel.strip("/")
        return (self.prefix + rel).rstrip("/")

    # --- metadata ---

    @_git_errors
    def write_metadata(
        self, experiment_id: str, snapshot: str, text: bytes, expected: str | None, when: float
    ) -> str:
        """Point refs/keepsake/metadata/<id> at a new metadata commit; return its id.

        `expected` is the metadata commit this writer wrote last (None the first time): if the
        ref moved meanwhile (deleted by `git keepsake rm`, say), RefMoved is raised.
        """
        with self._lock:
            repo = self.repo
            snapshot_commit = repo[snapshot].peel(pygit2.Commit)
            blob = repo.create_blob(text)
            inner = repo.TreeBuilder()
            inner.insert(METADATA_FILE.split("/")[1], blob, _FILE)
            root = repo.TreeBuilder(snapshot_commit.tree)
            root.insert(METADATA_FILE.split("/")[0], inner.write(), pygit2.enums.FileMode.TREE)
            signature = self.signature(when)
            commit = repo.create_commit(
                None,
                signature,
                signature,
                f"keepsake: metadata of experiment {experiment_id[:7]}\n",
                root.write(),
                [snapshot_commit.id],
            )
            self._swap_ref(ExperimentRef.metadata(experiment_id), commit, expected)
            return str(commit)

    @_git_errors
    def metadata_refs(self) -> dict[str, str]:
        """{experiment id: metadata commit id} for every experiment in git, through libgit2
        (for refs stored as reftable; `Catalog` reads the ref files itself, faster)."""
        with self._lock:
            out = {}
            for ref in self.repo.references.iterator():
                if ref.name.startswith(METADATA_REFS):
                    out[ref.name[len(METADATA_REFS) :]] = str(ref.target)
            return out

    @_git_errors
    def read_metadata(self, commit: str) -> bytes:
        with self._lock:
            tree = self.repo[commit].peel(pygit2.Commit).tree
            return tree[METADATA_FILE].data

    @_git_errors
    def diff_snapshots(self, a: str, b: str, patch: bool = False) -> str:
        """`git diff --stat a b` (the full patch with `patch`) between two snapshot commits;
        "" when their trees are the same."""
        with self._lock:
            diff = self.repo.diff(self.repo[a].peel(pygit2.Tree), self.repo[b].peel(pygit2.Tree))
            diff.find_similar()
            if patch:
                return diff.patch or ""
            if not len(diff):
                return ""
            fmt = pygit2.enums.DiffStatsFormat.FULL | pygit2.enums.DiffStatsFormat.INCLUDE_SUMMARY
            return diff.stats.format(fmt, 80)

    def has_object(self, oid: str) -> bool:
        with self._lock:
            try:
                return oid in self.repo
            except (ValueError, pygit2.GitError):
                return False

    def pack_refs(self) -> None:
        """Pack loose refs (10,000 loose refs list 5-20x slower than packed); best effort."""
        with self._lock:
            try:
                self.repo.compress_references()
            except pygit2.GitError:
                pass  # another process holds packed-refs.lock: it is packing anyway

    def loose_ref_count(self) -> int:
        folder = self.common_dir / NAMESPACE.rstrip("/")
        if not folder.is_dir():
            return 0
        return sum(len(files) for _, _, files in os.walk(folder))

    # --- notes ---

    def update_note(self, commit: str, experiment_id: str, line: str) -> None:
        from . import notes

        with self._lock:
            notes.update_note(self.repo, commit, experiment_id, line, self.signature(time.time()))

    def remove_note_line(self, commit: str, experiment_id: str) -> None:
        from . import notes

        with self._lock:
            notes.remove_note_line(self.repo, commit, experiment_id, self.signature(time.time()))

    @_git_errors
    def delete_experiment_refs(self, experiment_id: str) -> list[str]:
        """Delete both refs of an experiment; returns the names deleted. The metadata ref goes
        first: a writer still running then fails its compare-and-swap instead of reviving it."""
        deleted = []
        with self._lock:
            for name in map(
                str, (ExperimentRef.metadata(experiment_id), ExperimentRef.snapshot(experiment_id))
            ):
                if self.repo.references.get(name) is not None:
                    self._locking(name, lambda name=name: self.repo.references.delete(name))
                    deleted.append(name)
        return deleted

    def metadata_ref(self, experiment_id: str) -> str | None:
        """The metadata commit of one experiment, or None if it is not in git."""
        return self.ref_target(str(ExperimentRef.metadata(experiment_id)))

    @_git_errors
    def ref_target(self, name: str) -> str | None:
        """What ref `name` points at, or None if there is no such ref."""
        with self._lock:
            ref = self.repo.references.get(name)
            return str(ref.target) if ref is not None else None

    @_git_errors
    def adopt_fetched(self, remote: str, skip: Collection[str] = ()) -> tuple[int, int, set[str]]:
        """Bring the experiment refs fetched from `remote` into refs/keepsake/: a ref missing
        here is created; a metadata ref that differs takes the newer commit (an experiment has
        one writer, so its metadata only moves forward); a snapshot ref, written once, is kept.
        Experiments whose IDs are in `skip` (removed here) are left out. Returns how many
        experiments are new here, how many moved forward, and which were skipped."""
        created = updated = 0
        skipped: set[str] = set()
        prefix = fetched_prefix(remote)
        with self._lock:
            fetched = [
                ExperimentRef.from_ref(r) for r in self.repo.references if r.startswith(prefix)
            ]
            for ref in fetched:
                if ref is None or fetched_prefix(ref.remote or "") != prefix:
                    continue
                if ref.experiment_id in skip:
                    skipped.add(ref.experiment_id)
                    continue
                local = ref.local()
                theirs = self.repo.references[str(ref)].target
                ours = self.repo.references.get(str(local))
                try:
                    if ours is None:
                        self._create_ref(local, theirs)
                        created += local.is_metadata
                    elif (
                        ours.target != theirs
                        and local.is_metadata
                        and self.repo[theirs].commit_time > self.repo[ours.target].commit_time
                    ):
                        self._swap_ref(local, theirs, str(ours.target))
                        updated += 1
                except RefMoved:
                    continue  # a run here moved it meanwhile: ours is the newer
        return created, updated, skipped

    def rebuild_notes(self, lines_by_commit: dict[str, list[str]]) -> None:
        from . import notes

        with self._lock:
            notes.rebuild_notes(self.repo, lines_by_commit, self.signature(time.time()))

    # --- reading a snapshot back (checkout) ---

    @_git_errors
    def snapshot_files(self, commit: str) -> list[tuple[str, str, str, int]] | None:
        """The files of `commit`'s tree inside the project dir, re-rooted there: a list of
        (project-relative path, kind, blob id, size), kind being "file", "exec", "link" or
        "gitlink" (a submodule: a commit id, no content here). None if the commit is not in
        this repository (its refs were not fetched)."""
        with self._lock:
            repo = self.repo
            try:
                obj = repo.get(commit)
            except (ValueError, pygit2.GitError):
                obj = None
            if obj is None:
                return None
            tree = obj.peel(pygit2.Tree)
            if self.prefix:
                try:
                    tree = tree[self.prefix.rstrip("/")]
                except KeyError:
                    return []
                if not isinstance(tree, pygit2.Tree):
                    return []
            read_header = repo.odb.read_header
            out = []
            stack = [("", tree)]
            while stack:
                base, folder = stack.pop()
                for entry in folder:
                    path = base + entry.name
                    mode = entry.filemode
                    if mode == pygit2.enums.FileMode.TREE:
                        stack.append((path + "/", repo[entry.id]))
                    elif mode == pygit2.enums.FileMode.COMMIT:
                        out.append((path, "gitlink", str(entry.id), 0))
                    else:
                        kind = {_EXECUTABLE: "exec", _LINK: "link"}.get(mode, "file")
                        out.append((path, kind, str(entry.id), read_header(entry.id)[1]))
            out.sort()
            return out

    @_git_errors
    def write_blob(self, blob_id: str, path: str | os.PathLike, mode: int = 0o644) -> None:
        """Write a blob's raw bytes (no filters: as stored, as hashed) to a new file at `path`
        (created with `mode`, less the umask; an existing file is an error)."""
        with self._lock:
            blob = self.repo[blob_id].peel(pygit2.Blob)
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as out:
                out.write(memoryview(blob))  # the buffer itself: no copy of a large blob

    @_git_errors
    def read_blob(self, blob_id: str) -> bytes:
        with self._lock:
            return self.repo[blob_id].peel(pygit2.Blob).data

    @_git_errors
    def hash_file(self, path: str | os.PathLike) -> str:
        """The blob id git would give the file's bytes (nothing is written to the database)."""
        return str(pygit2.hashfile(os.fspath(path)))

    # --- refs and identity ---

    def signature(self, when: float) -> pygit2.Signature:
        """The user's git identity; without one (no user.name/email), a made-up local one:
        recording an experiment must not fail because git was never configured."""
        name = os.environ.get("GIT_COMMITTER_NAME") or os.environ.get("GIT_AUTHOR_NAME")
        email = os.environ.get("GIT_COMMITTER_EMAIL") or os.environ.get("GIT_AUTHOR_EMAIL")
        if not (name and email):
            config = self.repo.config
            try:
                name = name or config["user.name"]
                email = email or config["user.email"]
            except KeyError:
                user = os.environ.get("USER") or "user"
                name = name or "git-keepsake"
                email = email or f"{user}@{os.uname().nodename or 'localhost'}"
        offset = (time.localtime(when).tm_gmtoff or 0) // 60
        return pygit2.Signature(name, email, int(when), offset)

    def _create_ref(self, ref: ExperimentRef, target: pygit2.Oid) -> None:
        self._swap_ref(ref, target, None)

    def _swap_ref(self, ref: ExperimentRef, target: pygit2.Oid, expected: str | None) -> None:
        """Set `ref` to `target` if it still points at `expected` (None: absent)."""
        name = str(ref)

        def swap() -> None:
            with self.repo.transaction() as txn:
                txn.lock_ref(name)
                current = self.repo.references.get(name)
                now = str(current.target) if current is not None else None
                if now != expected:
                    raise RefMoved(
                        f"{name} moved (now {now and now[:7]}, expected "
                        f"{expected and expected[:7]}): another process changed it"
                    )
                txn.set_target(name, target, message="git-keepsake")

        self._locking(name, swap)

    def _locking(self, name: str, action) -> None:
        """Run `action`, which locks ref `name`. While another process holds the lock, try
        again for a while; a lock a killed process left behind (a SIGKILLed `rm`) is removed.
        A lock that stays raises GitError saying which file it is."""
        for attempt in range(50):
            try:
                return action()
            except (pygit2.GitError, OSError) as e:
                if "lock" not in str(e).lower():
                    raise
                if remove_stale_locks(self.common_dir, name):
                    continue
                if attempt == 49:
                    locks = " or ".join(map(str, lock_files(self.common_dir, name)))
                    raise GitError(
                        f"could not update {name}: {e}",
                        hint=f"if no git process is running, remove {locks or 'its .lock file'}",
                    ) from e
                time.sleep(0.01 * (1 + attempt % 10))


def _unchanged(path: str, before: os.stat_result) -> bool:
    """Whether the file at `path` is still the one `before` describes."""
    try:
        now = os.lstat(path)
    except OSError:
        return False
    fields = ("st_ino", "st_mode", "st_size", "st_mtime_ns", "st_ctime_ns")
    return all(getattr(now, f) == getattr(before, f) for f in fields)
