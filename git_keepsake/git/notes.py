"""refs/notes/keepsake: a git note on each commit listing the experiments started from it."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable

import pygit2

from ..errors import InvalidArgument, KeepsakeError, NotFound
from ..text import UNPRINTABLE
from .refs import NOTES_REF

_PARAMS_MAX = 200
_HEX = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")  # SHA-1, or SHA-256
# Everything str.splitlines() breaks on, plus the other control characters.
_FIRST_DELAY = 0.002
_MAX_DELAY = 0.25


class NotesError(KeepsakeError):
    """refs/notes/keepsake could not be read or updated."""


class _Retry(Exception):
    """The notes ref moved, or another process holds its lock: build the update again."""


def format_note_line(
    experiment_id: str,
    params: dict | None,
    best: tuple[str, float, int | None] | None,
) -> str:
    """One line naming an experiment, e.g.

    "keepsake experiment 3f8a508: learning_rate=0.01, num_epochs=10; best loss=0.0172 at step 7"
    """
    if params:
        text = ", ".join(f"{key}={_format_value(value)}" for key, value in params.items())
        if len(text) > _PARAMS_MAX:
            text = text[: _PARAMS_MAX - 3] + "..."
    else:
        text = "no params"
    line = f"{_prefix(experiment_id)} {text}"
    if best is not None:
        name, value, step = best
        line += f"; best {name}={_format_value(value, digits=4)}"
        if step is not None:
            line += f" at step {step}"
    return _one_line(line)


def read_note(repo: pygit2.Repository, commit_hex: str) -> str | None:
    """The text of the keepsake note on a commit, or None when it has none."""
    commit_hex = _check_hex(commit_hex)
    try:
        head = _notes_head(repo)
        if head is None:
            return None
        blob = _find_note(_notes_commit(repo, head).tree, commit_hex)
    except pygit2.GitError as exc:
        raise NotesError(f"can't read {NOTES_REF}: {exc}") from exc
    return None if blob is None else blob.data.decode("utf-8", "replace")


def update_note(
    repo: pygit2.Repository,
    commit_hex: str,
    experiment_id: str,
    line: str,
    signature: pygit2.Signature,
    *,
    timeout: float = 30.0,
) -> None:
    """Put `line` in the note on a commit: in place of the experiment's line, or appended.

    Other lines, including ones keepsake didn't write, are kept as they are.
    """
    commit_hex = _check_hex(commit_hex)
    prefix = _prefix(experiment_id).encode()
    new_line = _one_line(line).encode()
    if not new_line.startswith(prefix):
        raise InvalidArgument(
            f"note line {line!r} doesn't start with {prefix.decode()!r}",
            hint="build it with format_note_line()",
        )
    if commit_hex not in repo:
        raise NotFound(f"can't add a note to {commit_hex[:7]}: no such commit in this repository")

    def edit(lines: list[bytes]) -> list[bytes]:
        kept = []
        placed = False
        for old in lines:
            if not old.startswith(prefix):
                kept.append(old)
            elif not placed:
                kept.append(new_line)
                placed = True
        if not placed:
            kept.append(new_line)
        return kept

    _edit_note(repo, commit_hex, edit, signature, timeout, f"keepsake: note for {commit_hex[:7]}")


def remove_note_line(
    repo: pygit2.Repository,
    commit_hex: str,
    experiment_id: str,
    signature: pygit2.Signature,
    *,
    timeout: float = 30.0,
) -> None:
    """Drop an experiment's line from the note on a commit; delete the note when nothing is left."""
    commit_hex = _check_hex(commit_hex)
    prefix = _prefix(experiment_id).encode()

    def edit(lines: list[bytes]) -> list[bytes]:
        return [old for old in lines if not old.startswith(prefix)]

    message = f"keepsake: note for {commit_hex[:7]} (remove {_short_id(experiment_id)})"
    _edit_note(repo, commit_hex, edit, signature, timeout, message)


def rebuild_notes(
    repo: pygit2.Repository,
    lines_by_commit: dict[str, list[str]],
    signature: pygit2.Signature,
    *,
    timeout: float = 30.0,
) -> None:
    """Replace all keepsake notes with exactly these, in one commit on top of the current notes.

    Commits that aren't in the object database are skipped. Nothing is written when the notes
    already hold exactly this.
    """
    subtrees: dict[str, pygit2.TreeBuilder] = {}
    for commit_hex, lines in lines_by_commit.items():
        commit_hex = _check_hex(commit_hex)
        data = _join([_one_line(line).encode() for line in lines])
        if data is None or commit_hex not in repo:
            continue
        if commit_hex[:2] not in subtrees:
            subtrees[commit_hex[:2]] = repo.TreeBuilder()
        subtrees[commit_hex[:2]].insert(
            commit_hex[2:], repo.create_blob(data), pygit2.GIT_FILEMODE_BLOB
        )
    root = repo.TreeBuilder()
    for name, builder in subtrees.items():
        root.insert(name, builder.write(), pygit2.GIT_FILEMODE_TREE)
    tree = root.write()

    def attempt() -> None:
        head = _notes_head(repo)
        if head is not None and _notes_commit(repo, head).tree_id == tree:
            return
        _commit_and_swap(repo, head, tree, signature, "keepsake: rebuild notes")

    _with_retries(attempt, timeout)


# Reading and writing the notes tree


def _edit_note(
    repo: pygit2.Repository,
    commit_hex: str,
    edit: Callable[[list[bytes]], list[bytes]],
    signature: pygit2.Signature,
    timeout: float,
    message: str,
) -> None:
    """Read-modify-write the note on one commit, compare-and-swapping the notes ref."""

    def attempt() -> None:
        head = _notes_head(repo)
        root = _notes_commit(repo, head).tree if head is not None else None
        blob = _find_note(root, commit_hex)
        old = blob.data if blob is not None else None
        new = _join(edit(_split(old)))
        if new == old:
            return
        new_blob = repo.create_blob(new) if new is not None else None
        tree = _write_note(repo, root, commit_hex, new_blob, levels=1)
        if tree is None:
            tree = repo.TreeBuilder().write()
        _commit_and_swap(repo, head, tree, signature, message)

    _with_retries(attempt, timeout)


def _find_note(tree: pygit2.Tree | None, name: str) -> pygit2.Blob | None:
    """The note blob for `name`, stored flat or under any depth of 2-character fan-out."""
    while tree is not None:
        entry = _child(tree, name)
        if isinstance(entry, pygit2.Blob):
            return entry
        if len(name) <= 2:
            return None
        subtree = _child(tree, name[:2])
        tree = subtree if isinstance(subtree, pygit2.Tree) else None
        name = name[2:]
    return None


def _write_note(
    repo: pygit2.Repository,
    tree: pygit2.Tree | None,
    name: str,
    blob: pygit2.Oid | None,
    levels: int,
) -> pygit2.Oid | None:
    """`tree` with the note for `name` removed from wherever it was, then (if `blob`) written
    `levels` levels of 2-character fan-out down. Returns None for an empty tree.

    Only the trees on the note's path are rebuilt, so an update costs the same with 10 notes
    or 100,000.
    """
    builder = repo.TreeBuilder(tree) if tree is not None else repo.TreeBuilder()
    changed = False
    if builder.get(name) is not None:
        builder.remove(name)
        changed = True
    if levels == 0 and blob is not None:
        builder.insert(name, blob, pygit2.GIT_FILEMODE_BLOB)
        changed = True
    if len(name) > 2:
        subtree = _child(tree, name[:2]) if tree is not None else None
        if not isinstance(subtree, pygit2.Tree):
            subtree = None
        if subtree is not None or (levels > 0 and blob is not None):
            new = _write_note(repo, subtree, name[2:], blob if levels > 0 else None, levels - 1)
            if new != (subtree.id if subtree is not None else None):
                if new is None:
                    builder.remove(name[:2])
                else:
                    builder.insert(name[:2], new, pygit2.GIT_FILEMODE_TREE)
                changed = True
    if not changed:
        return tree.id if tree is not None else None
    return builder.write() if len(builder) else None


def _child(tree: pygit2.Tree, name: str) -> pygit2.Object | None:
    try:
        return tree[name]
    except KeyError:
        return None


def _split(data: bytes | None) -> list[bytes]:
    if not data:
        return []
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


def _join(lines: list[bytes]) -> bytes | None:
    """A note's contents, or None when there is nothing worth keeping."""
    if not any(line.strip() for line in lines):
        return None
    return b"\n".join(lines) + b"\n"


# The notes ref


def _notes_head(repo: pygit2.Repository) -> pygit2.Oid | None:
    ref = repo.references.get(NOTES_REF)
    return None if ref is None else ref.resolve().target


def _notes_commit(repo: pygit2.Repository, oid: pygit2.Oid) -> pygit2.Commit:
    try:
        return repo[oid].peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError) as exc:
        raise NotesError(
            f"{NOTES_REF} points to {oid}, which is not a commit",
            hint=f"delete it with `git update-ref -d {NOTES_REF}`; keepsake rebuilds its notes",
        ) from exc


def _commit_and_swap(
    repo: pygit2.Repository,
    head: pygit2.Oid | None,
    tree: pygit2.Oid,
    signature: pygit2.Signature,
    message: str,
) -> None:
    parents = [head] if head is not None else []
    new = repo.create_commit(None, signature, signature, message + "\n", tree, parents)
    # libgit2 transactions don't compare old values themselves; holding the ref's lock while we
    # compare does the same. Locking a ref that doesn't exist yet works and creates nothing
    # until commit, so "expected: absent" is covered by the same comparison.
    with repo.transaction() as txn:
        try:
            txn.lock_ref(NOTES_REF)
        except pygit2.GitError as exc:
            if "lock" not in str(exc):
                raise
            raise _Retry(f"another process holds the lock on {NOTES_REF} ({exc})") from exc
        if _notes_head(repo) != head:
            # Raising out of the block frees the transaction (and its lock) without committing.
            raise _Retry(f"{NOTES_REF} moved while the update was being built")
        # Not passing `signature`: pygit2 1.21 hands Signature._pointer (bytes) to cffi and fails
        # with TypeError. The reflog entry gets the repository's default identity instead.
        txn.set_target(NOTES_REF, new, message=message)


def _with_retries(attempt: Callable[[], None], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = _FIRST_DELAY
    while True:
        try:
            attempt()
            return
        except _Retry as exc:
            reason = str(exc)
        except pygit2.GitError as exc:
            raise NotesError(f"can't update {NOTES_REF}: {exc}") from exc
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if "lock" in reason:
                hint = f"if no git process is running, remove .git/{NOTES_REF}.lock"
            else:
                hint = "other processes keep updating the notes; try again"
            raise NotesError(f"gave up updating {NOTES_REF} after {timeout:g}s: {reason}", hint)
        # Jittered exponential backoff, so processes that collided don't collide again.
        time.sleep(min(remaining, random.uniform(delay / 2, delay)))
        delay = min(delay * 2, _MAX_DELAY)


# Note text


def _prefix(experiment_id: str) -> str:
    return f"keepsake experiment {_short_id(experiment_id)}:"


def _short_id(experiment_id: str) -> str:
    short = _one_line(str(experiment_id)).strip()[:7]
    if not short or " " in short or ":" in short:
        raise InvalidArgument(f"invalid experiment ID {experiment_id!r}")
    return short


def _check_hex(commit_hex: str) -> str:
    normalized = str(commit_hex).strip().lower()
    if not _HEX.fullmatch(normalized):
        raise InvalidArgument(f"{commit_hex!r} is not a full commit ID (40 hex characters)")
    return normalized


def _format_value(value: object, digits: int | None = None) -> str:
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        value = value.item()  # np.float64(0.01) reads as 0.01
    # repr is the shortest text that reads back as the same float: 0.01, 1e-05, 0.30000000000000004.
    if digits is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.{digits}g}"
    return repr(value)


def _one_line(text: str) -> str:
    return UNPRINTABLE.sub(" ", text)
