"""Checkout: an experiment's code and a checkpoint's files, restored into a folder, safely.

What is restored:
- an experiment: its code, and its best checkpoint's files (else its latest's);
- a checkpoint: its experiment's code, and its own files.
The checkpoint's files win where both have a file.

Code comes from the experiment's git snapshot commit when this repository has it: the whole
snapshot tree under the project dir (HEAD's tree at init, with the snapshotted path as it was
on disk), with executable bits and symlinks. Files left out of git for their size are taken
from the experiment's tarball. Without the snapshot (recorded by Keepsake, outside git, or not
fetched), code comes from `experiments/<id>.tar.gz`, if there is one.

How it stays safe (DESIGN invariant 5: nothing lands outside the output folder, in `.git` or
the repository folder, or goes through a symlink). The CLI and the Python API
(`Checkpoint.checkout`) both come here, so they share every check:
- `plan_checkout()` writes nothing in the output folder but a staging folder of its own
  (`.keepsake-checkout-*`, same filesystem), where everything new or different is extracted
  first. The staging folder ignores itself for git (a `.gitignore` of `*` inside it) and is
  locked while its checkout lives; a killed checkout's is removed by the next command in that
  folder (`remove_abandoned_staging`). Before anything is staged, the sizes the tarballs
  declare are checked against the free space (a tar bomb stops there).
- Tar members with `..`, absolute paths, links or devices, or that would go into `.git` (in any
  case) or the repository folder, raise UnsafeTarball while only staging has been written. A
  path with a symlink among its folders (wherever it leads: a later write would go through
  it), a folder that is `.git` or the repository folder for real (same inode), a folder where
  a file must go, or a file where a folder must go raise CheckoutError. Then each file is
  compared with what is there (size first, then bytes): `plan.conflicts` lists the existing
  files that would change.
- `plan.apply()` renames the staged files into place, opening each folder from the output
  folder down with O_NOFOLLOW, so no link put there since the check can redirect a write.
  Unchanged files are not touched. Nothing is ever deleted, and each target is checked again
  just before it is replaced: a file edited since it was compared stops the checkout rather
  than be lost.
- Symlinks in the git snapshot are written only if their target is relative, has `..` only
  at its start (after a name, `..` leaves whatever that name links to: `s/../..`), and stays
  inside the output folder and out of `.git` and the repository folder, by name and for real
  (through the links already there). Others are skipped with a note (they come from a git
  repository, so refusing the whole checkout for them would be unhelpful). Submodules are
  skipped too.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import posixpath
import secrets
import shutil
import stat
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .errors import CorruptRepository, InvalidArgument, KeepsakeError, NotFound, UnsafeTarball
from .records import CheckpointRecord, ExperimentRecord, GitInfo
from .snapshot import CHECKOUT_STAGING_PREFIX
from .store.layout import CHECKPOINTS, EXPERIMENTS
from .tarball import UNSAFE_HINT, iter_files
from .workspace import Workspace

STAGING_PREFIX = CHECKOUT_STAGING_PREFIX  # snapshots always skip it
CHUNK = 1024 * 1024
PROGRESS_STEP = 1024 * 1024
OTHER_DIR_HINT = "move it out of the way, or check out to another folder with -o DIR"
LOCK_FILE = "lock"  # in a staging folder: held while its checkout lives
MAX_INFLATE_RATIO = 1032  # deflate's limit: a .tar.gz never holds more than this times its size
BLOCK = 4096  # what a file takes on disk at least

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


class CheckoutError(KeepsakeError):
    """The output folder can't take the files without deleting something or writing outside it."""


class WouldOverwrite(CheckoutError):
    """Existing files differ from the checkout's, and overwriting them was not confirmed."""

    def __init__(
        self, output_dir: str | os.PathLike, conflicts: list[str], hint: str | None = None
    ):
        super().__init__(
            f"{len(conflicts)} file(s) in {os.fspath(output_dir)} would be overwritten",
            hint or "pass force=True to overwrite them",
        )
        self.conflicts = conflicts


@dataclass
class PlannedFile:
    """One file the checkout would write."""

    path: str  # project-relative posix path
    source: str  # "code" or "checkpoint"
    kind: str  # "file", "exec" or "link"
    size: int
    status: str = "new"  # "new", "changed", "mode" (only the executable bit) or "unchanged"
    blob: str | None = None  # code from git: the blob id
    link: str | None = None  # kind "link": its target
    staged: str | None = None  # the new content, in the staging folder
    seen: tuple | None = None  # what was at the target when compared (see _fingerprint)


@dataclass
class CheckoutResult:
    output_dir: Path
    written: list[str] = field(default_factory=list)  # project-relative paths
    unchanged: list[str] = field(default_factory=list)


class CheckoutPlan:
    """What a checkout would write, staged and compared; `apply()` writes it, `close()` drops it.

    Use it as a context manager, so the staging folder goes whatever happens.
    """

    def __init__(
        self,
        project: Workspace,
        experiment: ExperimentRecord,
        checkpoint: CheckpointRecord | None,
        reason: str | None,
        output_dir: Path,
        reserved: dict[tuple[int, int], str],
    ):
        self.project = project
        self.experiment = experiment
        self.checkpoint = checkpoint
        self.checkpoint_reason = reason  # "asked", "best", "latest", or None without one
        self.output_dir = output_dir  # resolved (symlinks followed)
        self.reserved = reserved  # (st_dev, st_ino) of folders never written into -> what
        self.code_source: str | None = None  # "git", "tarball", or None: no code
        self.code_description = ""  # e.g. "git snapshot 1a2b3c4 of main @ 9f8e7d6"
        self.files: list[PlannedFile] = []  # sorted by path
        self.notes: list[str] = []  # what was skipped or missing, and why
        self._staging: str | None = None
        self._cleanup: weakref.finalize | None = None
        self._created: list[str] = []  # folders made for output_dir, outermost first
        self._count = 0
        self._closed = False

    def __enter__(self) -> CheckoutPlan:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def conflicts(self) -> list[str]:
        """Existing files whose contents would change (never-seen files are not conflicts)."""
        return [f.path for f in self.files if f.status == "changed"]

    @property
    def unchanged(self) -> list[str]:
        return [f.path for f in self.files if f.status == "unchanged"]

    @property
    def to_write(self) -> list[str]:
        return [f.path for f in self.files if f.status != "unchanged"]

    def apply(self) -> CheckoutResult:
        """Move the staged files into place (conflicts included: ask before calling this)."""
        if self._closed:
            raise CheckoutError("this checkout was already applied or closed")
        root = str(self.output_dir)
        written: list[str] = []
        target = root
        done = False
        root_fd = None
        try:
            # Everything is checked again first (the prompt may have waited an hour), so a
            # file edited meanwhile stops the checkout before anything is written...
            changes = [f for f in self.files if f.status != "unchanged"]
            for f in changes:
                target = _target(root, f.path)
                st = _inspect(root, f.path, self.reserved)
                self._check_unchanged_since_compared(f, target, st, written)
            root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
            for f in changes:
                target = _target(root, f.path)
                st = _inspect(root, f.path, self.reserved)
                # ...and each file just before it is replaced, to keep the window small.
                self._check_unchanged_since_compared(f, target, st, written)
                folder = _open_folder(root_fd, f.path)
                name = f.path.rpartition("/")[2]
                try:
                    if f.status == "mode":
                        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=folder)
                        try:
                            os.fchmod(fd, _exec_mode(st.st_mode, f.kind == "exec"))
                        finally:
                            os.close(fd)
                    else:
                        _move(f.staged, name, folder)
                finally:
                    os.close(folder)
                written.append(f.path)
            done = True
        except OSError as e:
            raise CheckoutError(
                f"could not write {target}: {e.strerror or e}" + _written_before(written)
            ) from e
        finally:
            if root_fd is not None:
                os.close(root_fd)
            self.close(keep_output_dir=done or bool(written))
        return CheckoutResult(self.output_dir, written, self.unchanged)

    @staticmethod
    def _check_unchanged_since_compared(f, target, st, written) -> None:
        if _fingerprint(st) != f.seen:
            raise CheckoutError(
                f"{target} changed while the checkout was waiting; it was left as it is"
                + _written_before(written),
                hint="run the checkout again",
            )

    def close(self, keep_output_dir: bool = False) -> None:
        """Remove the staging folder, and the output folder if this plan made it and nothing
        was written there. Safe to call twice."""
        if self._cleanup is not None:
            self._cleanup()
        if not self._closed and not keep_output_dir:
            for folder in reversed(self._created):
                try:
                    os.rmdir(folder)  # only if empty: never removes anything else
                except OSError:
                    break
        self._closed = True

    # --- used while planning ---

    def _staging_dir(self) -> str:
        if self._staging is None:
            prefix = f"{STAGING_PREFIX}{os.getpid()}-"
            staging = tempfile.mkdtemp(prefix=prefix, dir=self.output_dir)
            # Never in `git status`, whatever the user's ignore rules, even after a kill.
            with open(os.path.join(staging, ".gitignore"), "w") as f:
                f.write("*\n")
            lock = os.open(os.path.join(staging, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(lock, fcntl.LOCK_EX)  # the kernel lets go when this process dies
            self._staging = staging
            self._cleanup = weakref.finalize(self, _remove_staging, staging, lock)
        return self._staging

    def _new_staged_path(self) -> str:
        self._count += 1
        return os.path.join(self._staging_dir(), f"{self._count:07d}")


def _remove_staging(staging: str, lock: int) -> None:
    shutil.rmtree(staging, ignore_errors=True)
    os.close(lock)


def remove_abandoned_staging(directory: str | os.PathLike) -> None:
    """Delete the staging folders (`.keepsake-checkout-<pid>-*`, up to a checkpoint's size of
    partial weights) that killed checkouts left in `directory`. A live checkout holds the lock
    on its folder's lock file; a folder without one (being made, or from an older version) is
    judged by whether the process in its name is alive. A live one's is never touched."""
    try:
        names = [n for n in os.listdir(directory) if n.startswith(STAGING_PREFIX)]
    except OSError:
        return
    for name in names:
        folder = os.path.join(directory, name)
        try:
            lock = os.open(os.path.join(folder, LOCK_FILE), os.O_RDWR)
        except FileNotFoundError:
            pid = name[len(STAGING_PREFIX) :].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                shutil.rmtree(folder, ignore_errors=True)
            continue
        except OSError:
            continue
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock)  # its checkout is running
            continue
        _remove_staging(folder, lock)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's
    return True


def choose_checkpoint(
    target: ExperimentRecord | CheckpointRecord,
) -> tuple[ExperimentRecord, CheckpointRecord | None, str | None]:
    """(experiment, checkpoint, why): a checkpoint is "asked"; for an experiment, its "best"
    checkpoint, else its "latest", else none."""
    if isinstance(target, CheckpointRecord):
        if target.experiment is None:
            raise NotFound(f"checkpoint {target.short_id()} is not attached to an experiment")
        return target.experiment, target, "asked"
    return (target, *target.representative())


def plan_checkout(
    project: Workspace,
    target: ExperimentRecord | CheckpointRecord | str,
    output_dir: str | os.PathLike | None = None,
    *,
    path: str | None = None,
    code: bool = True,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
) -> CheckoutPlan:
    """Stage and compare what checking out `target` (an experiment, a checkpoint or an ID
    prefix) into `output_dir` (default: the project dir, made if missing) would write.

    `path`: only this project-relative file or folder, from the code and the checkpoint alike.
    `code=False`: the checkpoint's files only, not its experiment's code.
    `progress(done, total)` is called as bytes are extracted; `log` gets a line per download.
    Raises UnsafeTarball, CheckoutError, NotFound... with nothing written but staging, which
    is removed then. Otherwise the caller must `apply()` or `close()` the plan.
    """
    if isinstance(target, str):
        target = project.catalog.find(target)
    experiment, checkpoint, reason = choose_checkpoint(target)
    if isinstance(target, CheckpointRecord) and target.files_removed:
        raise NotFound(
            f"the files of checkpoint {target.short_id()} were removed (git keepsake rm)",
            hint="its metrics and step are still recorded; check out another checkpoint",
        )
    only = _clean_path(path)
    if "writer" in vars(project):
        project.writer.flush()  # this process recorded something: let its tarballs land first
    directory = os.path.abspath(
        os.fspath(output_dir if output_dir is not None else project.directory)
    )
    reserved = _reserved_folders(project)
    real = os.path.realpath(directory)
    home = os.path.realpath(project.directory)  # a repository folder holding it is no reason
    inside = [n for f, n in reserved.items() if _inside(real, f) and not _inside(home, f)]
    if inside or _has_git_part(real):
        raise CheckoutError(
            f"{directory} is in {inside[0] if inside else 'a .git folder'}: checkout never "
            "writes there",
            hint="check out to another folder with -o DIR",
        )
    created = _make_output_dir(directory)
    remove_abandoned_staging(directory)
    plan = CheckoutPlan(project, experiment, checkpoint, reason, Path(real), _folder_ids(reserved))
    plan._created = created
    try:
        _Planner(plan, only, code, progress, log).run()
    except OSError as e:
        plan.close()
        where = f" {e.filename}" if e.filename else ""
        raise CheckoutError(
            f"could not check out into {plan.output_dir}:{where} {e.strerror or e}",
            hint="nothing was written; check the folder's permissions and free space, or check "
            "out to another folder with -o DIR",
        ) from e
    except BaseException:
        plan.close()
        raise
    return plan


def checkout(
    project: Workspace,
    target: ExperimentRecord | CheckpointRecord | str,
    output_dir: str | os.PathLike | None = None,
    *,
    path: str | None = None,
    code: bool = True,
    force: bool = False,
) -> CheckoutResult:
    """Check out `target` into `output_dir` (default: the project dir).

    Raises WouldOverwrite, having written nothing, if existing files would change and `force`
    is not set. Never deletes a file. `code=False`: the checkpoint's files only.
    """
    with plan_checkout(project, target, output_dir, path=path, code=code) as plan:
        if plan.conflicts and not force:
            raise WouldOverwrite(plan.output_dir, plan.conflicts)
        return plan.apply()


class _Planner:
    """Fills a CheckoutPlan: gathers the sources, stages what differs, compares."""

    def __init__(self, plan: CheckoutPlan, only: str | None, code: bool, progress, log):
        self.plan = plan
        self.project = plan.project
        self.root = str(plan.output_dir)
        self.only = only
        self.code_wanted = code
        self.progress = progress
        self.log = log or (lambda line: None)
        self.done = 0
        self.reported = -1
        self.total = 0
        self.matched = False  # `only` matched something, even something skipped
        self.available: set[str] = set()  # every path in the sources, for "not found" errors
        self.code: dict[str, PlannedFile] = {}
        self.weights: dict[str, PlannedFile] = {}
        self.reserved = self._reserved_inside()
        self.downloaded: dict[str, str] = {}  # local copy -> the blob's URL

    def run(self) -> None:
        plan = self.plan
        git_files = self._git_snapshot() if self.code_wanted else None
        code_tarball = self._code_tarball(git_files is not None) if self.code_wanted else None
        weights_tarball = self._checkpoint_tarball()
        if git_files is not None:
            self._plan_git(git_files)
        in_git = {entry[0] for entry in git_files or ()}
        tarballs = [
            (tarball, skip)
            for tarball, skip in ((code_tarball, in_git), (weights_tarball, set()))
            if tarball is not None
        ]
        self._check_space(tarballs)
        self.total = sum(f.size for f in self.code.values() if f.blob is not None)
        for tarball, _ in tarballs:
            self.total += os.path.getsize(tarball)
        self._tick(0)
        if code_tarball is not None:
            self._stage_tarball(code_tarball, "code", skip=in_git)
        if weights_tarball is not None:
            self._stage_tarball(weights_tarball, "checkpoint")
        if self.only is not None and not self.matched:
            raise self._path_not_found()
        plan.files = self._merge()
        for f in plan.files:
            self._compare(f)

    # --- the sources ---

    def _git_snapshot(self) -> list[tuple[str, str, str, int]] | None:
        plan, experiment = self.plan, self.plan.experiment
        info = experiment.git or GitInfo()
        snapshot = info.snapshot
        if not snapshot:
            return None
        git = self.project.git
        if git is None:
            where = (
                f"{self.project.directory} is not in a git work tree"
                if self.project.is_own_repository
                else f"{self.project.repository.url} is read alone, without this project's git"
            )
            plan.notes.append(
                f"experiment {experiment.short_id()} was recorded in git (snapshot "
                f"{snapshot[:7]}), but {where}"
            )
            return None
        files = git.snapshot_files(snapshot)
        if files is None:
            plan.notes.append(
                f"the git snapshot {snapshot[:7]} of experiment {experiment.short_id()} is not "
                "in this repository (its refs were not fetched?)"
            )
            return None
        plan.code_source = "git"
        commit, branch = info.commit, info.branch
        text = f"git snapshot {snapshot[:7]}"
        if commit:
            text += f" of {branch} @ {commit[:7]}" if branch else f" of {commit[:7]}"
        if experiment.path and info.dirty:
            text += ", with the uncommitted changes it ran with"
        plan.code_description = text
        if not experiment.path and info.dirty:
            plan.notes.append(
                f"experiment {experiment.short_id()} ran with uncommitted changes that were not "
                f"recorded (it was started without init(path=...)): this is the code of commit "
                f"{(commit or '')[:7]}"
            )
        return files

    def _code_tarball(self, have_git: bool) -> str | None:
        plan, experiment = self.plan, self.plan.experiment
        if not experiment.path:
            if not have_git:
                plan.notes.append(
                    f"experiment {experiment.short_id()} has no code snapshot "
                    "(it was started without init(path=...))"
                )
            return None
        # With git, the tarball only adds what was too big for git: optional.
        local = self._fetch(EXPERIMENTS, experiment.id)
        if local is None and not have_git:
            repository = self.project.repository
            plan.notes.append(
                f"the code of experiment {experiment.short_id()} is missing: "
                f"{repository.tarball_name(EXPERIMENTS, experiment.id)} is not in {repository.url}"
            )
        elif local is not None and not have_git:
            plan.code_source = "tarball"
            plan.code_description = f"snapshot of '{experiment.path}' in blob storage"
        return local

    def _checkpoint_tarball(self) -> str | None:
        plan, experiment, checkpoint = self.plan, self.plan.experiment, self.plan.checkpoint
        if checkpoint is None:
            plan.notes.append(
                f"experiment {experiment.short_id()} has no checkpoints: only its code is restored"
            )
            return None
        if not checkpoint.path:
            plan.notes.append(
                f"checkpoint {checkpoint.short_id()} has no files "
                "(it was saved without checkpoint(path=...))"
            )
            return None
        local = self._fetch(CHECKPOINTS, checkpoint.id)
        if local is None:
            repository = self.project.repository
            key = repository.tarball_name(CHECKPOINTS, checkpoint.id)
            raise NotFound(
                f"the files of checkpoint {checkpoint.short_id()} are missing: {key} is not in "
                f"{repository.url}{_recorded_elsewhere(experiment, repository.url)}",
                hint="if it was recorded on another machine, its upload may not have finished",
            )
        return local

    def _check_space(self, tarballs: list[tuple[str, set[str]]]) -> None:
        """Refuse, before anything is staged, a checkout the disk can't hold (a tar bomb
        compresses a thousandfold). A tarball is listed only if it could hold more than fits."""
        free = shutil.disk_usage(self.plan._staging_dir()).free
        need = sum(f.size + BLOCK for f in self.code.values() if f.blob is not None)
        if need + sum(os.path.getsize(t) * MAX_INFLATE_RATIO for t, _ in tarballs) <= free:
            return
        for tarball, skip in tarballs:
            name = self.downloaded.get(tarball, tarball)
            with open(tarball, "rb") as raw:
                need += sum(
                    member.size + BLOCK
                    for rel, member, _ in iter_files(name, raw)
                    if rel not in skip and self._selected(rel)
                )
        if need > free:
            raise CheckoutError(
                f"not enough space in {self.root}: the checkout needs {_mb(need)}, "
                f"{_mb(free)} is free",
                hint="free some space, or check out to another folder with -o DIR",
            )

    def _fetch(self, kind: str, object_id: str) -> str | None:
        """A local path to a tarball (downloaded into staging if remote), None if absent."""
        repository = self.project.repository
        key = repository.tarball_name(kind, object_id)
        remote = repository.is_remote(kind, object_id)
        if remote:
            self.log(f"Downloading {key} from {repository.url}")
        local = repository.local_tarball(kind, object_id, self.plan._staging_dir())
        if local is not None and remote:
            self.downloaded[str(local)] = f"{repository.url}/{key}"
        return None if local is None else str(local)

    # --- staging ---

    def _plan_git(self, files: list[tuple[str, str, str, int]]) -> None:
        git = self.project.git
        for path, kind, blob, size in files:
            if kind != "gitlink":
                self.available.add(path)
            if not self._wanted(path):
                continue
            if kind == "gitlink":
                self.plan.notes.append(
                    f"skipped submodule {path} (at {blob[:7]}): restore it with "
                    "`git submodule update`"
                )
                continue
            place = self._reserved_place(path)
            if place:
                raise CheckoutError(
                    f"the git snapshot has {path!r}, which would be written into {place}"
                )
            if kind == "link":
                link = os.fsdecode(git.read_blob(blob))
                problem = self._link_problem(path, link)
                if problem:
                    self.plan.notes.append(f"skipped symlink {path} -> {link}: {problem}")
                    continue
                self.code[path] = PlannedFile(path, "code", "link", len(link), link=link)
            else:
                self.code[path] = PlannedFile(path, "code", kind, size, blob=blob)

    def _stage_tarball(self, src: str, source: str, skip: set[str] = frozenset()) -> None:
        planned = self.code if source == "code" else self.weights
        start = self.done
        name = self.downloaded.get(src, src)  # errors name the blob, not our temp copy
        with open(src, "rb") as raw:
            for rel, member, reader in iter_files(name, _Counted(raw, self._tick)):
                place = self._reserved_place(rel)
                if place:
                    raise UnsafeTarball(
                        f"{name}: member {member.name!r} would be written into {place}",
                        UNSAFE_HINT,
                    )
                if rel in skip:
                    continue  # the git snapshot has it
                self.available.add(rel)
                if not self._wanted(rel):
                    continue
                # Fail before staging gigabytes, not after.
                _inspect(self.root, rel, self.plan.reserved)
                kind = "exec" if member.mode & 0o111 else "file"
                staged = self.plan._new_staged_path()
                with _create(staged, kind) as out:
                    shutil.copyfileobj(reader, out, CHUNK)
                planned[rel] = PlannedFile(rel, source, kind, member.size, staged=staged)
        self._tick(os.path.getsize(src) - (self.done - start))  # padding after the end marker

    def _merge(self) -> list[PlannedFile]:
        """Code, then the checkpoint's files over it; one path can't be a file and a folder."""
        files = {**self.code, **self.weights}
        for rel in sorted(files):
            parts = rel.split("/")
            for i in range(1, len(parts)):
                folder = "/".join(parts[:i])
                if folder not in files or rel not in files:
                    continue
                a, b = files[folder], files[rel]
                if a.source == b.source:
                    raise CorruptRepository(
                        f"the {a.source} has {folder!r} both as a file and as a folder"
                    )
                loser = a if a.source == "code" else b
                del files[loser.path]
                self.plan.notes.append(
                    f"the code's {loser.path} is left out: the checkpoint has "
                    f"{'files under' if loser is a else 'a file at'} {folder}"
                )
        return [files[rel] for rel in sorted(files)]

    def _compare(self, f: PlannedFile) -> None:
        """Set f.status from what is at the target; stage what must be written."""
        target = _target(self.root, f.path)
        st = _inspect(self.root, f.path, self.plan.reserved)
        is_file = st is not None and stat.S_ISREG(st.st_mode)
        if f.kind == "link":
            same = st is not None and stat.S_ISLNK(st.st_mode) and os.readlink(target) == f.link
            if not same:
                f.staged = self.plan._new_staged_path()
                os.symlink(f.link, f.staged)
        elif f.blob is not None:
            git = self.project.git
            same = is_file and st.st_size == f.size and git.hash_file(target) == f.blob
            if not same:
                f.staged = self.plan._new_staged_path()
                git.write_blob(f.blob, f.staged, 0o755 if f.kind == "exec" else 0o644)
            self._tick(f.size)
        else:
            same = is_file and st.st_size == f.size and _same_bytes(f.staged, target)
            if same:
                os.unlink(f.staged)  # ours, in staging: not needed
                f.staged = None
        if same:
            executable = f.kind == "exec"
            f.status = "mode" if is_file and bool(st.st_mode & 0o100) != executable else "unchanged"
        else:
            f.status = "new" if st is None else "changed"
        f.seen = _fingerprint(st)

    # --- helpers ---

    def _selected(self, rel: str) -> bool:
        only = self.only
        return only is None or rel == only or rel.startswith(only + "/")

    def _wanted(self, rel: str) -> bool:
        if self._selected(rel):
            self.matched = True
            return True
        return False

    def _tick(self, n: int) -> None:
        self.done += n
        # Tar streams are read 10 KiB at a time: report per MiB, and at the start and end.
        if self.progress is not None and (
            self.done - self.reported >= PROGRESS_STEP or self.done in (0, self.total)
        ):
            self.reported = self.done
            self.progress(self.done, self.total)

    def _reserved_inside(self) -> list[str]:
        """The output-relative paths of the folders never written into that are inside it."""
        out = []
        for folder in _reserved_folders(self.project):
            try:
                rel = Path(folder).relative_to(self.root).as_posix()
            except ValueError:
                continue
            if rel != ".":
                out.append(rel)
        return out

    def _reserved_place(self, rel: str) -> str | None:
        """What `rel` would be written into that it must not be, judged by its name."""
        if _has_git_part(rel):
            return "a .git folder"
        for folder in self.reserved:
            if rel == folder or rel.startswith(folder + "/"):
                return f"the repository folder {folder}"
        return None

    def _link_problem(self, rel: str, link: str) -> str | None:
        """Why a symlink at `rel` to `link` must not be written, or None."""
        if not link or posixpath.isabs(link) or os.path.isabs(link):
            return "it points outside the output folder"
        parts = [p for p in link.split("/") if p not in ("", ".")]
        ups = 0
        while ups < len(parts) and parts[ups] == "..":
            ups += 1
        if ".." in parts[ups:]:
            return "it has '..' after a folder name, which another link could lead anywhere"
        base = rel.split("/")[:-1]
        if ups > len(base):
            return "it points outside the output folder"
        resolved = "/".join(base[: len(base) - ups] + parts[ups:])
        place = self._reserved_place(resolved) if resolved else None
        if place:
            return f"it points into {place}"
        # For real: through the links already in the output folder.
        real = os.path.realpath(_target(self.root, resolved) if resolved else self.root)
        if not _inside(real, self.root):
            return "it leads outside the output folder, through a link there"
        place = self._reserved_place(Path(real).relative_to(self.root).as_posix())
        folder = real
        while not place and folder != self.root and _inside(folder, self.root):
            try:
                st = os.stat(folder)
                place = self.plan.reserved.get((st.st_dev, st.st_ino))
            except OSError:
                pass
            folder = os.path.dirname(folder)
        return f"it points into {place}" if place else None

    def _path_not_found(self) -> NotFound:
        plan = self.plan
        where = f"the code of experiment {plan.experiment.short_id()}"
        if plan.checkpoint is not None and plan.checkpoint.path:
            where += f" or checkpoint {plan.checkpoint.short_id()}"
        top = sorted({p.split("/")[0] + ("/" if "/" in p else "") for p in self.available})
        shown = ", ".join(top[:20]) + (f", ... ({len(top)} in all)" if len(top) > 20 else "")
        return NotFound(
            f"{self.only!r} is not in {where}; "
            + (f"it has: {shown}" if top else "there are no files"),
            hint="--path takes a file or folder relative to the project directory",
        )


class _Counted:
    """A binary reader that reports how many bytes went through it."""

    def __init__(self, raw: BinaryIO, tick: Callable[[int], None]):
        self._raw = raw
        self._tick = tick

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._tick(len(data))
        return data


def _clean_path(path: str | os.PathLike | None) -> str | None:
    if path is None:
        return None
    text = os.fspath(path).replace(os.sep, "/")
    if posixpath.isabs(text) or ".." in text.split("/"):
        raise InvalidArgument(
            f"the path {os.fspath(path)!r} must be inside the project directory, relative to it",
            hint="e.g. --path model.pth or --path src/",
        )
    text = posixpath.normpath(text).strip("/")
    return None if text in ("", ".") else text


def _make_output_dir(directory: str) -> list[str]:
    """Create the output folder if missing; returns the folders made, outermost first."""
    missing = []
    folder = directory
    while not os.path.isdir(folder):
        if os.path.lexists(folder):
            raise CheckoutError(
                f"{folder} is not a folder", hint="give a folder to check out into with -o DIR"
            )
        missing.append(folder)
        folder = os.path.dirname(folder)
    created = []
    try:
        for folder in reversed(missing):
            os.mkdir(folder)
            created.append(folder)
    except OSError as e:
        for folder in reversed(created):
            os.rmdir(folder)
        raise CheckoutError(f"could not create {e.filename or directory}: {e.strerror}") from e
    return created


def _target(root: str, rel: str) -> str:
    return os.path.join(root, *rel.split("/"))


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def _has_git_part(path: str) -> bool:
    """`.git` in any case: one on a case-insensitive disk is git's own."""
    return any(part.lower() == ".git" for part in path.replace(os.sep, "/").split("/"))


def _reserved_folders(project: Workspace) -> dict[str, str]:
    """The resolved folders no checkout may write into -> how to name them: the git dir and
    the local repository."""
    out = {}
    if project.git_dirs:
        git_dir = os.path.realpath(project.git_dirs[1])
        out[git_dir] = f"the git folder {git_dir}"
    local = project.local_repository_dir()
    if local is not None:
        out[os.path.realpath(local)] = f"the repository folder {local}"
    return out


def _folder_ids(folders: dict[str, str]) -> dict[tuple[int, int], str]:
    ids = {}
    for folder, name in folders.items():
        try:
            st = os.stat(folder)
        except OSError:
            continue
        ids[(st.st_dev, st.st_ino)] = name
    return ids


def _inspect(root: str, rel: str, reserved: dict[tuple[int, int], str]) -> os.stat_result | None:
    """lstat of the target (None if absent), once it is clear that it can be written without
    going through a symlink, into a `reserved` folder (by inode: whatever its name's case),
    outside `root` (a resolved path), or deleting anything."""
    parts = rel.split("/")
    folder = root
    for part in parts[:-1]:
        folder = os.path.join(folder, part)
        try:
            st = os.lstat(folder)
        except FileNotFoundError:
            return None  # made at apply time; nothing below it exists
        if stat.S_ISLNK(st.st_mode):
            raise CheckoutError(
                f"{folder} is a symlink (to {os.readlink(folder)!r}), and checkout never "
                f"writes through one: {rel} would go wherever it leads",
                hint="replace the link with a folder, or check out to another folder with -o DIR",
            )
        place = reserved.get((st.st_dev, st.st_ino))
        if place:
            raise CheckoutError(
                f"{folder} is {place}: {rel} can't be written there",
                hint="check out to another folder with -o DIR",
            )
        if not stat.S_ISDIR(st.st_mode):
            raise CheckoutError(
                f"{folder} is a file, and {rel} needs a folder there", hint=OTHER_DIR_HINT
            )
    target = os.path.join(folder, parts[-1])
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(st.st_mode):
        raise CheckoutError(
            f"{target} is a folder, and the checkout has a file there", hint=OTHER_DIR_HINT
        )
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise CheckoutError(f"{target} is not a regular file", hint=OTHER_DIR_HINT)
    return st


def _fingerprint(st: os.stat_result | None) -> tuple | None:
    if st is None:
        return None
    return (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino)


def _create(path: str, kind: str):
    """A new file in staging, its mode as checkout leaves it (the umask applies, as for git)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    return open(os.open(path, flags, 0o755 if kind == "exec" else 0o644), "wb")


def _same_bytes(a: str, b: str) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            chunk = fa.read(CHUNK)
            if chunk != fb.read(CHUNK):
                return False
            if not chunk:
                return True


def _exec_mode(mode: int, executable: bool) -> int:
    """`mode` with x where r is set (as git does), or with no x at all."""
    mode = stat.S_IMODE(mode)
    return mode | (mode & 0o444) >> 2 if executable else mode & ~0o111


def _open_folder(root_fd: int, rel: str) -> int:
    """An fd of the folder `rel` goes in, opened one name at a time from the output folder
    without following symlinks (a link there makes it fail); missing folders are made."""
    fd = os.dup(root_fd)
    try:
        for part in rel.split("/")[:-1]:
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
            try:
                sub = os.open(part, flags, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(part, dir_fd=fd)
                sub = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = sub
    except BaseException:
        os.close(fd)
        raise
    return fd


def _move(staged: str, name: str, folder: int) -> None:
    """Rename the staged file to `name` in the folder open as `folder`."""
    try:
        os.replace(staged, name, dst_dir_fd=folder)
        return
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    # Another filesystem is mounted inside the output folder: copy beside the target first.
    tmp = f".{name}.{secrets.token_hex(4)}.tmp"
    try:
        if os.path.islink(staged):
            os.symlink(os.readlink(staged), tmp, dir_fd=folder)
        else:
            mode = stat.S_IMODE(os.stat(staged).st_mode)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            fd = os.open(tmp, flags, mode, dir_fd=folder)
            with open(staged, "rb") as src, open(fd, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
        os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=folder)
        raise


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"


def _written_before(written: list[str]) -> str:
    return f" ({len(written)} file(s) were written before that)" if written else ""


def _recorded_elsewhere(experiment, url: str) -> str:
    """Where the experiment was recorded, when not here: a teammate's per-clone storage."""
    recorded = (experiment.config or {}).get("repository")
    if not isinstance(recorded, str) or not recorded or recorded == url:
        return ""
    return f" (experiment {experiment.short_id()} was recorded to {recorded})"
