"""The pre-push hook: installing it (after pre-commit's installer) and what it runs on push.

`install` writes hooks/pre-push (at the top of the repository, shipped in the package as
git_keepsake.hooks) into the repository's hooks folder, which git names (`git rev-parse
--git-path hooks` follows core.hooksPath and worktrees), with the path of this Python baked
in: the hook then works with the virtualenv not active. A foreign hook already there is kept
as pre-push.legacy, which ours runs first with the same input; our own older versions are
recognised by their marker line and upgraded in place.
"""

from __future__ import annotations

import os
import re
import sys
from importlib import resources
from pathlib import Path

from .errors import ConfigError, KeepsakeError

HOOK = "pre-push"
LEGACY = "pre-push.legacy"
MARKER = re.compile(rb"^# git-keepsake pre-push hook, version (\d+)$", re.MULTILINE)


def hook_text() -> str:
    template = resources.files("git_keepsake.hooks").joinpath(HOOK).read_text()
    return template.replace("@PYTHON@", sys.executable.replace("'", "'\\''"))


def hooks_dir(work_dir: Path) -> Path:
    """Where git looks for hooks: core.hooksPath if set, and a worktree's common folder."""
    from .git.remote import run_git
    from .git.repo import GitError

    try:
        out = run_git(work_dir, "rev-parse", "--git-path", "hooks").strip()
    except GitError as e:
        raise ConfigError(
            f"{work_dir} is not in a git repository",
            hint="the hook pushes experiments with your branches: run this inside a git clone",
        ) from e
    return (work_dir / out).resolve()


def our_version(path: Path) -> int | None:
    """The version of our hook at `path`; None if it is another tool's (or none)."""
    try:
        return _version(path.read_bytes()[:400])
    except OSError:
        return None


def _version(text: bytes) -> int | None:
    found = MARKER.search(text)
    return int(found.group(1)) if found else None


def install(work_dir: Path, force: bool = False) -> str:
    """Install (or upgrade) the hook; what was done, in words."""
    folder = hooks_dir(work_dir)
    hook, legacy = folder / HOOK, folder / LEGACY
    folder.mkdir(parents=True, exist_ok=True)
    text = hook_text()
    version = our_version(hook)
    if hook.exists() and version is None and not force:
        if legacy.exists():
            raise ConfigError(
                f"{hook} is another tool's hook, and {legacy} is taken already",
                hint="look at both; `git keepsake install --force` replaces the hook",
            )
        os.replace(hook, legacy)
        done = f"installed {hook}; the hook that was there runs first, as {legacy.name}"
    elif version is not None:
        done = f"upgraded {hook} (version {version} to {_version(text.encode())})"
    else:
        replaced = " (replacing the one that was there)" if hook.exists() else ""
        done = f"installed {hook}{replaced}"
    _write(hook, text)
    return done


def uninstall(work_dir: Path) -> str:
    folder = hooks_dir(work_dir)
    hook, legacy = folder / HOOK, folder / LEGACY
    if not hook.exists():
        return f"no {hook} to remove"
    if our_version(hook) is None:
        raise ConfigError(
            f"{hook} is not git-keepsake's hook: left alone",
            hint="remove it by hand if you want it gone",
        )
    hook.unlink()
    if legacy.exists():
        os.replace(legacy, hook)
        return f"removed git-keepsake's hook; {hook.name} is the one that was there before"
    return f"removed {hook}"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o755)
    os.replace(tmp, path)


def pre_push(remote: str, url: str) -> None:
    """What the hook runs: push experiments along with the branch, never stopping it."""
    from .project import Project
    from .sharing import push

    def say(line: str) -> None:
        print(f"git-keepsake: {line}", file=sys.stderr, flush=True)

    try:
        pushed = push(Project(directory=Path.cwd()), remote or url)
    except Exception as e:  # a bug too: the branch push must not pay for it
        reason = e.message if isinstance(e, KeepsakeError) else f"{type(e).__name__}: {e}"
        say(f"experiments were not pushed to {remote}: {reason}")
        say(f"your branch push goes on; to retry: git keepsake push {remote}")
        return
    for recovered in pushed.recovered:
        say(f"finished an earlier run's writes: {recovered.describe()}")
    if pushed.upload_problem:
        say(
            f"some runs' uploads are not finished ({pushed.upload_problem}); their newest "
            "checkpoints go with the next push"
        )
    if pushed.notes_problem:
        say(f"notes on commits not pushed ({pushed.notes_problem}); they go with the next push")
    say(f"pushed {pushed.experiments} experiment(s) to {remote}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["pre-push"] and len(sys.argv) == 4:
        pre_push(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: python -m git_keepsake.hook pre-push REMOTE URL")
