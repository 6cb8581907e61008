"""Compare two source trees of git-keepsake in one run: `checkpoint()` latency (1 KB x 100, p50)
and a warm `git keepsake ls` of N experiments, each measured alternately on both trees.

For a refactor: the baseline is another checkout (e.g. `git worktree add /tmp/base main~5`).
Each side runs in a fresh interpreter with PYTHONPATH set to its tree; both use this venv's
dependencies. Prints medians and the ratio new/base (a ratio near 1.0 is "no worse").

    python bench/trees.py /tmp/base .            # base tree, then the tree to judge
    python bench/trees.py /tmp/base . --experiments 1000 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHECKPOINT = r"""
import os, sys, time, statistics
os.environ["GIT_KEEPSAKE_STRICT"] = "1"
import git_keepsake as keepsake
open("w.bin", "wb").write(os.urandom(1024))
e = keepsake.init(path=None, params={"lr": 0.1})
times = []
for i in range(100):
    t = time.perf_counter()
    e.checkpoint(path="w.bin", step=i, metrics={"loss": 1.0 / (i + 1)}, quiet=True)
    times.append(time.perf_counter() - t)
e.stop()
print(statistics.median(times))
"""

LS = r"""
import sys, time, io, contextlib
from git_keepsake.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    main(["ls"])  # warm the index
t = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    main(["ls"])
print(time.perf_counter() - t)
"""


def run(tree: Path, code: str, cwd: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from _repos import generate

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        generate(repo, args.experiments)
        results: dict[str, dict[str, list[float]]] = {"checkpoint": {}, "ls": {}}
        for _ in range(args.rounds):
            for side, tree in (("base", args.base), ("new", args.new)):
                work = Path(tempfile.mkdtemp(dir=tmp))
                results["checkpoint"].setdefault(side, []).append(run(tree, CHECKPOINT, work))
                results["ls"].setdefault(side, []).append(run(tree, LS, repo))
    print(f"{'measure':<34} {'base':>10} {'new':>10} {'new/base':>9}")
    for name, label, scale, unit in (
        ("checkpoint", "checkpoint() 1 KB, p50", 1e3, "ms"),
        ("ls", f"ls warm, {args.experiments} experiments", 1e3, "ms"),
    ):
        base = statistics.median(results[name]["base"]) * scale
        new = statistics.median(results[name]["new"]) * scale
        print(f"{label:<34} {base:>8.2f}{unit} {new:>8.2f}{unit} {new / base:>8.2f}x")


if __name__ == "__main__":
    main()
