"""Fetching and pushing keepsake refs through the `git` binary: it has the user's credentials and
ssh config, and it takes glob refspecs (pygit2 pushes neither globs nor with a lease).

A remote's refs are fetched into a namespace of their own, `refs/keepsake-fetched/<remote>/`,
never straight onto `refs/keepsake/*`: a forced fetch there would set a local run's metadata
back to what was last pushed, and `--prune` would delete unpushed experiments (DESIGN.md 2.2).
`sharing.py` merges them from there.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ..errors import GitError
from .refs import NAMESPACE, NOTES_REF, fetched_prefix

# Set while keepsake runs git, so that the pre-push hook, if git runs it, does nothing.
GUARD = "GIT_KEEPSAKE_PUSHING"


def fetch(work_dir: Path, remote: str) -> None:
    """The remote's refs/keepsake/* and notes, into fetched_prefix(remote) (pruned there)."""
    into = fetched_prefix(remote)
    run_git(
        work_dir,
        "fetch",
        "--quiet",
        "--no-tags",
        "--prune",
        remote,
        f"+{NAMESPACE}*:{into}keepsake/*",
        f"+{NOTES_REF}*:{into}notes/keepsake*",  # a glob: no error when there are no notes
    )


def push(work_dir: Path, remote: str, notes_lease: str | None, push_notes: bool) -> None:
    """Every refs/keepsake/* ref (forced: each is owned by the one process that records it),
    and the notes if `push_notes`, only if the remote's still point at `notes_lease` (None:
    it has none), since the notes are shared by everyone who pushes."""
    args = ["push", "--quiet", "--no-verify", remote, f"+{NAMESPACE}*:{NAMESPACE}*"]
    if push_notes:
        args[3:3] = [f"--force-with-lease={NOTES_REF}:{notes_lease or ''}"]
        args.append(f"{NOTES_REF}:{NOTES_REF}")
    run_git(work_dir, *args)
    record_pushed(work_dir, remote)


def record_pushed(work_dir: Path, remote: str) -> None:
    """What was pushed is now the remote's too: recorded as fetched, as git moves its
    remote-tracking branches on push, so that "not on any remote" needs no network."""
    into = fetched_prefix(remote) + "keepsake/"
    listed = run_git(work_dir, "for-each-ref", "--format=%(objectname) %(refname)", NAMESPACE)
    updates = "".join(
        f"update {into}{name[len(NAMESPACE) :]} {sha}\n"
        for sha, _, name in (line.partition(" ") for line in listed.splitlines())
    )
    if updates:
        run_git(work_dir, "update-ref", "--stdin", input=updates)


def run_git(work_dir: Path, *args: str, input: str | None = None) -> str:
    """The `git` binary's output; GitError with git's own first complaint if it fails."""
    env = {**os.environ, GUARD: "1", "GIT_TERMINAL_PROMPT": "0"}
    try:
        result = subprocess.run(
            ["git", *args],
            cwd=work_dir,
            env=env,
            input=input,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as e:
        raise GitError(f"could not run git: {e}", hint="install git, and put it on PATH") from e
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        # git explains on its first fatal/error line; what follows is advice.
        first = next((ln for ln in lines if ln.startswith(("fatal:", "error:"))), None)
        detail = first or (lines[0] if lines else f"exit code {result.returncode}")
        detail = detail.removeprefix("fatal: ").removeprefix("error: ")
        raise GitError(f"git {args[0]} failed: {detail}", hint=_HINTS.get(args[0]))
    return result.stdout


_HINTS = {
    "fetch": "check the remote's URL and your access to it: git remote -v",
    "push": "check the remote's URL and your access to it: git remote -v",
}
