"""What teammates can't see yet, said where it is cheap to know: experiments on no git remote
(a `git push` with no new commits never runs the pre-push hook), and storage inside this clone.

"On a remote" is what this clone last fetched from or pushed to one (refs/keepsake-fetched/,
see git/remote.py): read from the ref files, no network, no pygit2.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from .git.refs import FETCHED, METADATA_REFS, read_refs

if TYPE_CHECKING:
    from .workspace import Workspace

_REMOTE = re.compile(r'^\s*\[remote\s+"([^"]+)"\]', re.MULTILINE)


def remotes(common_dir: Path) -> list[str]:
    """The remotes in the repository's config (includes are not followed)."""
    try:
        return _REMOTE.findall((common_dir / "config").read_text(errors="replace"))
    except OSError:
        return []


def unpushed_line(common_dir: Path) -> str | None:
    """How many experiments here no remote has, and the command that pushes them; None when
    there are none, or no remote to push to."""
    names = remotes(common_dir)
    here = read_refs(common_dir, METADATA_REFS)
    fetched = read_refs(common_dir, FETCHED)
    if not names or not here or fetched is None:
        return None
    on_remote = {name.rpartition("/")[2] for name in fetched if "/keepsake/metadata/" in name}
    count = len(set(here) - on_remote)
    if not count:
        return None
    remote = "origin" if "origin" in names else names[0]
    command = "git keepsake push" + ("" if remote == "origin" else f" {remote}")
    return (
        f"{count} experiment(s) not on any git remote yet ({command} shares them; "
        "`git push` does only when it has commits to push)"
    )


def per_clone_storage_line(workspace: Workspace) -> str | None:
    """A warning when the experiments' files are stored inside this clone: teammates who
    fetch the experiments could not check out their files."""
    root = getattr(workspace.repository.storage, "root", None)  # file:// storage only
    work_tree = workspace.git_dirs[0] if workspace.git_dirs else None
    if root is None or work_tree is None or not Path(root).is_relative_to(work_tree):
        return None
    return (
        f"experiments' files are stored in this clone ({workspace.repository.url}): teammates "
        "can fetch the experiments but not their files; for shared storage set in "
        'keepsake.yaml e.g. repository: "s3://my-bucket/keepsake"'
    )
