"""Benchmark `experiments.list()`: from git refs (cold and warm index) against blob-storage JSON.

Generates, in a temp dir, a git repository with N experiments x 50 checkpoints, recorded the way
git-keepsake records them (a snapshot commit and a metadata commit per experiment, packed refs,
the same JSON in `.keepsake/metadata/experiments/`), then times, in one run:

* git, cold index: `experiments.list()` with the local index deleted first;
* git, warm index: again, with the index in place (a repeated `ls`);
* storage JSON: the same experiments read from blob storage only, as Keepsake 0.4.2 and a
  git-less project do (parse every file), the baseline;
* storage, warm index: blob storage with the index in place.

Run from the repository root:
    python bench/list.py                # 1,000 and 10,000 experiments (about two minutes)
    python bench/list.py --sizes 1000   # just one size
The machine is shared and noisy: each time is the median of several runs; compare the ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _repos import CHECKPOINTS, generate

import git_keepsake as keepsake

TARGET_WARM_10K = 1.0  # seconds: 10,000 experiments listed from git with a warm index


def timed_list(project_dir: Path, repository: str | None, index: Path, keep_index: bool) -> float:
    if not keep_index:
        index.unlink(missing_ok=True)
    start = time.perf_counter()
    experiments = keepsake.Project(repository=repository, directory=project_dir).experiments.list()
    best = [e.best() for e in experiments]  # what `ls` shows: best and latest checkpoints
    latest = [e.latest() for e in experiments]
    elapsed = time.perf_counter() - start
    assert len(experiments) == len(best) == len(latest)
    return elapsed


def median_list(
    project_dir: Path, repository: str | None, index: Path, warm: bool, repeats: int
) -> float:
    if warm:
        timed_list(project_dir, repository, index, keep_index=True)  # fill the index
    return statistics.median(
        timed_list(project_dir, repository, index, keep_index=warm) for _ in range(repeats)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"experiments.list() with {CHECKPOINTS} checkpoints each (median of {args.repeats}; s)")
    header = ["experiments", "git cold", "git warm", "storage JSON", "storage warm", "JSON/warm"]
    print("  " + "  ".join(f"{h:>13}" for h in header))
    warm_10k = None
    with tempfile.TemporaryDirectory(prefix="bench-list-") as tmp:
        os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")
        for count in args.sizes:
            root = Path(tmp) / f"repo-{count}"
            t = time.perf_counter()
            generate(root, count)
            print(
                f"  (generated {count} experiments in {time.perf_counter() - t:.0f} s)",
                file=sys.stderr,
            )
            git_index = root / ".git" / "keepsake" / "index.sqlite"
            # The same blob storage seen from a directory outside git: storage JSON only.
            outside = Path(tmp) / f"outside-{count}"
            outside.mkdir()
            storage_url = f"file://{root}/.keepsake"
            storage_project = keepsake.Project(repository=storage_url, directory=outside)
            storage_index = storage_project.state_dir / "index.sqlite"

            git_side = (root, None, git_index)
            storage_side = (outside, storage_url, storage_index)
            cold = median_list(*git_side, warm=False, repeats=args.repeats)
            warm = median_list(*git_side, warm=True, repeats=args.repeats)
            json_only = median_list(*storage_side, warm=False, repeats=args.repeats)
            storage_warm = median_list(*storage_side, warm=True, repeats=args.repeats)
            row = [f"{count:,}", cold, warm, json_only, storage_warm]
            cells = [f"{row[0]:>13}"] + [f"{v:>13.3f}" for v in row[1:]]
            cells.append(f"{json_only / warm:>12.1f}x")
            print("  " + "  ".join(cells))
            if count == 10000:
                warm_10k = warm
    if warm_10k is not None:
        ok = warm_10k < TARGET_WARM_10K
        print(
            f"{'ok    ' if ok else 'MISSED'}  10,000 experiments from git, warm index: "
            f"{warm_10k:.2f} s (target under {TARGET_WARM_10K:.0f} s)"
        )


if __name__ == "__main__":
    main()
