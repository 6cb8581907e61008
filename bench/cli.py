"""Benchmark the `git keepsake` command line, end to end: against `python -c pass`, Keepsake 0.4.2.

Generates, in a temp dir, a git repository with N experiments x 50 checkpoints (as bench/list.py
does, plus a keepsake.yaml so Keepsake 0.4.2 reads the same `.keepsake/` storage), then times
whole processes, wall clock, output to /dev/null:

* `python -c pass` and `python -c "import git_keepsake"`: the floor any Python CLI pays;
* `git-keepsake -h` (click's help, directly) and `git keepsake -h` (through git);
* `git keepsake ls`, cold (`.git/keepsake/index.sqlite` deleted before each run) and warm;
* `git keepsake show` of one experiment and of one checkpoint, and `diff` of two experiments,
  by 7-character ID prefixes;
* where installed, Keepsake 0.4.2's `keepsake --help`, `ls`, `show` and `diff`, on the same
  repository.

Each time is the median of --repeats runs after one untimed warm-up. A command that exits
non-zero is reported as FAILED with its error, not timed, and makes the run exit 1. Then a
`targets:` line checks each target (ok/MISSED, with the numbers).

Run from the repository root, in the venv git-keepsake is installed in:
    python bench/cli.py                                # 10, 1,000, 10,000 (several minutes)
    python bench/cli.py --sizes 10,1000 --repeats 3    # quicker
    python bench/cli.py --keep /tmp/bench-repos        # reuse generated repositories
Keepsake 0.4.2 is looked for at --keepsake PATH, in $GIT_KEEPSAKE_REFERENCE_VENV,
.ci/keepsake-0.4.2 and /tmp/ksvenv. The machine is shared and noisy: compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _repos import CHECKPOINTS, generate

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_VENVS = [
    os.environ.get("GIT_KEEPSAKE_REFERENCE_VENV", ""),
    str(ROOT / ".ci" / "keepsake-0.4.2"),
    "/tmp/ksvenv",
]
CONFIG = 'repository: "file://.keepsake"\n'
INDEX = Path(".git") / "keepsake" / "index.sqlite"
PREFIX = 7  # characters of an ID, as `ls` shows them
TIMEOUT = 600  # seconds, for one run of one command

# Targets (seconds), from the issue. Anchors measured on Keepsake 0.4.2 (a Go binary): `ls`
# 20 ms / 838 ms at 10 / 1,000 experiments; `show` and `diff` 0.8 s at 1,000.
HELP_OVER_PYTHON = 0.1
LS_UNDER = {1000: 0.3, 10000: 1.0}
INDEPENDENT = 1.5  # show/diff at the largest size at most this many times the smallest (noise)


@dataclass
class Row:
    label: str
    ours: list[str] | None  # argv; None for a row that is only Keepsake's
    theirs: list[str] | None = None  # Keepsake 0.4.2's command for the same thing
    cold: bool = False  # delete the index before each run
    result: dict[str, float | str] = field(default_factory=dict)  # "ours"/"theirs" -> s or error


def find_keepsake(explicit: str | None) -> Path | None:
    if explicit:
        path = Path(explicit)
        return path if path.is_file() else None
    for venv in REFERENCE_VENVS:
        if venv and (Path(venv) / "bin" / "keepsake").is_file():
            return Path(venv) / "bin" / "keepsake"
    return None


def pick_ids(root: Path) -> tuple[str, str, str]:
    """Two experiments from the middle of the history and one of their checkpoints, as unique
    prefixes (a prefix shared with another ID would make the command fail, not measure it)."""
    experiments = []
    all_ids = []
    for path in sorted((root / ".keepsake" / "metadata" / "experiments").glob("*.json")):
        data = json.loads(path.read_text())
        experiments.append((data["created"], data["id"], [c["id"] for c in data["checkpoints"]]))
        all_ids += [data["id"], *(c["id"] for c in data["checkpoints"])]
    experiments.sort()
    middle = len(experiments) // 2
    a = experiments[middle]
    b = experiments[min(middle + 1, len(experiments) - 1)]
    checkpoint = a[2][len(a[2]) // 2]

    def prefix(full: str) -> str:
        for length in range(PREFIX, len(full) + 1):
            if sum(other.startswith(full[:length]) for other in all_ids) == 1:
                return full[:length]
        return full

    return prefix(a[1]), prefix(b[1]), prefix(checkpoint)


def run_once(argv: list[str], cwd: Path, env: dict[str, str], cold: bool) -> float | str:
    if cold:
        (cwd / INDEX).unlink(missing_ok=True)
    start = time.perf_counter()
    try:
        result = subprocess.run(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return f"timed out after {TIMEOUT} s"
    except OSError as e:
        return str(e)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        lines = [line for line in result.stderr.decode(errors="replace").splitlines() if line]
        return f"exit {result.returncode}: {lines[0][:200] if lines else '(no message)'}"
    return elapsed


def measure(argv: list[str], cwd: Path, env: dict[str, str], cold: bool, repeats: int):
    """Median wall time in seconds, or the error of the first failing run."""
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up (file cache, .pyc), not counted
        outcome = run_once(argv, cwd, env, cold)
        if isinstance(outcome, str):
            return outcome
        times.append(outcome)
    return statistics.median(times[1:])


def rows_for(python: str, bin_dir: Path, keepsake: Path | None, ids: tuple[str, str, str]):
    exp_a, exp_b, chk = ids
    ks = [str(keepsake)] if keepsake else None

    def theirs(*args: str) -> list[str] | None:
        return [*ks, *args] if ks else None

    return [
        Row("python -c pass", [python, "-c", "pass"]),
        Row('python -c "import git_keepsake"', [python, "-c", "import git_keepsake"]),
        Row('python -c "import git_keepsake.cli"', [python, "-c", "import git_keepsake.cli"]),
        Row("git-keepsake -h", [str(bin_dir / "git-keepsake"), "-h"], theirs("--help")),
        Row("git keepsake -h", ["git", "keepsake", "-h"], theirs("--help")),
        Row("ls, cold index", ["git", "keepsake", "ls"], theirs("ls"), cold=True),
        Row("ls, warm index", ["git", "keepsake", "ls"], theirs("ls")),
        Row("show EXPERIMENT", ["git", "keepsake", "show", exp_a], theirs("show", exp_a)),
        Row("show CHECKPOINT", ["git", "keepsake", "show", chk], theirs("show", chk)),
        Row(
            "diff EXPERIMENT EXPERIMENT",
            ["git", "keepsake", "diff", exp_a, exp_b],
            theirs("diff", exp_a, exp_b),
        ),
    ]


def cell(value: float | str | None, width: int) -> str:
    if value is None:
        return " " * width
    if isinstance(value, str):
        return f"{'FAILED':>{width}}"
    return f"{value * 1000:>{width}.1f}"


def ratio(a: float | str | None, b: float | str | None, width: int) -> str:
    if isinstance(a, float) and isinstance(b, float) and b > 0:
        return f"{a / b:>{width - 1}.2f}x"
    return " " * width


def print_table(
    count: int, rows: list[Row], repeats: int, keepsake: Path | None, ids: tuple[str, str, str]
) -> list[str]:
    """The table for one size; returns the failures, one line each."""
    python = rows[0].result.get("ours")
    width = max(len(r.label) for r in rows)
    print(f"\n{count:,} experiments x {CHECKPOINTS} checkpoints (wall ms, median of {repeats})")
    print(f"  (EXPERIMENT {ids[0]} and {ids[1]}, CHECKPOINT {ids[2]})")
    head = ["git-keepsake", "/python", "keepsake 0.4.2" if keepsake else "", "ours/theirs"]
    print(f"  {'':<{width}}  {head[0]:>12}  {head[1]:>8}  {head[2]:>14}  {head[3]:>11}")
    failures = []
    for row in rows:
        ours, theirs = row.result.get("ours"), row.result.get("theirs")
        print(
            f"  {row.label:<{width}}  {cell(ours, 12)}  {ratio(ours, python, 8)}  "
            f"{cell(theirs, 14)}  {ratio(ours, theirs, 11)}".rstrip()
        )
        for value, argv in ((ours, row.ours), (theirs, row.theirs)):
            if isinstance(value, str):
                shown = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(argv or []))
                failures.append(f"{count:,}: {shown}: {value}")
    if not keepsake:
        print("  (Keepsake 0.4.2 not found: its column is empty; see --keepsake)")
    return failures


def seconds(value: float | str | None) -> str:
    return f"{value:.3f} s" if isinstance(value, float) else "FAILED"


def check_targets(results: dict[int, dict[str, Row]]) -> list[tuple[bool, str]]:
    checks = []
    for count, rows in results.items():
        python = rows["python -c pass"].result.get("ours")
        helped = rows["git keepsake -h"].result.get("ours")
        if isinstance(python, float) and isinstance(helped, float):
            over = helped - python
            checks.append(
                (
                    over <= HELP_OVER_PYTHON,
                    f"`git keepsake -h` at {count:,}: {helped * 1000:.0f} ms, "
                    f"{over * 1000:+.0f} ms over `python -c pass` "
                    f"(target within {HELP_OVER_PYTHON * 1000:.0f} ms)",
                )
            )
        else:
            checks.append((False, f"`git keepsake -h` at {count:,}: {seconds(helped)}"))
        if count in LS_UNDER:
            warm = rows["ls, warm index"].result.get("ours")
            cold = rows["ls, cold index"].result.get("ours")
            ok = isinstance(warm, float) and warm < LS_UNDER[count]
            checks.append(
                (
                    ok,
                    f"`git keepsake ls` at {count:,}: warm {seconds(warm)}, cold {seconds(cold)} "
                    f"(target warm under {LS_UNDER[count]:g} s)",
                )
            )
    sizes = sorted(results)
    if len(sizes) >= 2:
        small, large = sizes[0], sizes[-1]
        for key in (k for k in results[small] if k.startswith(("show", "diff"))):
            a = results[small][key].result.get("ours")
            b = results[large][key].result.get("ours")
            if isinstance(a, float) and isinstance(b, float):
                checks.append(
                    (
                        b <= a * INDEPENDENT,
                        f"`{key}` {seconds(b)} at {large:,} vs {seconds(a)} at {small:,}: "
                        f"{b / a:.2f}x (target independent of the count: at most {INDEPENDENT}x)",
                    )
                )
            else:
                checks.append(
                    (False, f"`{key}`: {seconds(a)} at {small:,}, {seconds(b)} at {large:,}")
                )
    return checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", default="10,1000,10000", help="experiment counts, comma-separated"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keepsake", metavar="PATH", help="Keepsake 0.4.2's `keepsake` binary")
    parser.add_argument(
        "--keep", metavar="DIR", help="generate repositories in DIR and reuse them next time"
    )
    args = parser.parse_args()
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    bin_dir = Path(sys.executable).parent  # not resolved: a venv's python is a symlink
    if not (bin_dir / "git-keepsake").is_file():
        print(
            f"error: no git-keepsake in {bin_dir} (pip install -e . in this venv)", file=sys.stderr
        )
        return 2
    keepsake = find_keepsake(args.keepsake)
    if args.keepsake and keepsake is None:
        print(f"error: {args.keepsake} is not a file", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "XDG_CACHE_HOME": str(Path(tmp) / "cache"),
            "KEEPSAKE_NO_ANALYTICS": "1",  # Keepsake 0.4.2 phones home otherwise
        }
        os.environ["XDG_CACHE_HOME"] = env["XDG_CACHE_HOME"]  # for generate()
        print(f"git-keepsake: {bin_dir / 'git-keepsake'}")
        print(f"Keepsake 0.4.2: {keepsake or 'not found (its rows are skipped)'}")
        results: dict[int, dict[str, Row]] = {}
        failures = []
        for count in sizes:
            root = work / f"repo-{count}"
            if not (root / ".keepsake").is_dir():
                if root.exists():
                    sys.exit(f"error: {root} exists but is not a generated repository")
                sys.stdout.flush()  # keep the tables and this note in order
                t = time.perf_counter()
                generate(root, count)
                elapsed = time.perf_counter() - t
                print(f"  (generated {count:,} experiments in {elapsed:.0f} s)", file=sys.stderr)
            (root / "keepsake.yaml").write_text(CONFIG)  # Keepsake 0.4.2 needs one
            ids = pick_ids(root)
            rows = rows_for(sys.executable, bin_dir, keepsake, ids)
            for row in rows:
                if row.ours:
                    row.result["ours"] = measure(row.ours, root, env, row.cold, args.repeats)
                if row.theirs:
                    row.result["theirs"] = measure(row.theirs, root, env, False, args.repeats)
            failures += print_table(count, rows, args.repeats, keepsake, ids)
            results[count] = {row.label: row for row in rows}

    print()
    if failures:
        print("failed (not timed):")
        for line in failures:
            print(f"  {line}")
    print("targets:")
    for ok, text in check_targets(results):
        print(f"  {'ok    ' if ok else 'MISSED'}  {text}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
