"""The ref namespaces, and reading refs straight from the files (no pygit2 import).

`git keepsake ls` with a warm cache needs nothing from git but the metadata refs' targets:
reading `packed-refs` and the loose ref files is a few milliseconds for 10,000 refs, while
importing pygit2 alone costs about 50 ms. Anything else goes through `repo.py`.
"""

from __future__ import annotations

import os
from pathlib import Path

EXPERIMENTS_REFS = "refs/keepsake/experiments/"
METADATA_REFS = "refs/keepsake/metadata/"
_HEX = frozenset("0123456789abcdef")


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
