"""Benchmark `checkpoint()` against a plain file copy and, where installed, Keepsake 0.4.2.

Measured in one run, on the same random data, for git_keepsake and Keepsake 0.4.2:

* 1 KB file, 100 `checkpoint()` calls in a row: p50, p99, first call, and the median of the
  last 10 calls against the first 10 (medians) (a flat series stays near 1.0x);
* 100 MB file: the `checkpoint()` call, median over fresh experiments (each waits until its
  write is durable before the next starts), against `shutil.copyfile` of the same file;
* 1 GB file: end to end, from the `checkpoint()` call until the tarball is durable in the
  repository (git_keepsake: `flush()` returns; Keepsake: its daemon, which uploads in the
  background, has exited after finishing), in MiB/s against `shutil.copyfile` and `tar czf`.

Every tarball written is checked (the whole gzip stream and its CRC, the member's name, size
and SHA-256, the experiment's metadata naming it), so a fast wrong result fails the run. The
machine is shared and noisy: timings are medians of repeats; compare the ratios.

Run from the repository root:
    python bench/checkpoint.py                  # 1 KB x 100, 100 MB, 1 GB; a few minutes
    python bench/checkpoint.py --quick          # 10 MB and 128 MB instead
    python bench/checkpoint.py --no-reference   # skip Keepsake 0.4.2
Keepsake 0.4.2 is looked for in $GIT_KEEPSAKE_REFERENCE_VENV, .ci/keepsake-0.4.2, /tmp/ksvenv.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import git_keepsake as keepsake

MiB = 1024 * 1024
CHUNK = 16 * MiB
SMALL_CALLS = 100
FLAT = 1.25  # "flat": calls 91-100 cost at most this much more than calls 1-10 (noise margin)
AS_COPY = 1.05  # "no slower than a copy", with a noise margin: the call itself makes one copy
TAR_REPEATS = 2  # tar czf of 1 GB takes half a minute; it is a reference point, not a target
PRIMARY = ("loss", "minimize")
CONFIG = 'repository: "file://.keepsake"\n'
REFERENCE_VENVS = [
    os.environ.get("GIT_KEEPSAKE_REFERENCE_VENV", ""),
    str(Path(__file__).resolve().parents[1] / ".ci" / "keepsake-0.4.2"),
    "/tmp/ksvenv",
]

# Runs inside Keepsake's venv, one experiment per process: argv = file, calls, result path.
# Its daemon echoes to stdout, so the result goes to a file. Terminating the daemon (what
# Keepsake does at exit) waits for its background uploads: that is when the data is durable.
KEEPSAKE_DRIVER = r"""
import json, os, sys, time
from keepsake.project import Project

name, calls, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
project = Project()
experiment = project.experiments.create(params={"bench": name}, quiet=True)
os.sync()
times, ids = [], []
start = time.perf_counter()
for i in range(calls):
    t = time.perf_counter()
    chk = experiment.checkpoint(
        path=name, metrics={"loss": float(i)}, primary_metric=("loss", "minimize"), quiet=True
    )
    times.append(time.perf_counter() - t)
    ids.append(chk.id)
project._daemon().cleanup()
durable = time.perf_counter() - start
with open(out, "w") as f:
    json.dump({"experiment": experiment.id, "ids": ids, "calls": times, "durable": durable}, f)
"""


@dataclass
class Run:
    experiment: str
    ids: list[str]
    calls: list[float]  # seconds per checkpoint() call
    durable: float  # seconds from the first call until everything is in the repository


@dataclass
class Data:
    name: str
    size: int
    sha256: str


def make_file(path: Path, size: int) -> Data:
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for offset in range(0, size, CHUNK):
            block = os.urandom(min(CHUNK, size - offset))
            digest.update(block)
            f.write(block)
    return Data(path.name, size, digest.hexdigest())


def run_git_keepsake(project_dir: Path, data: Data, calls: int) -> Run:
    experiment = keepsake.Project(directory=project_dir).experiments.create(
        params={"bench": data.name}, quiet=True
    )
    experiment.flush()
    os.sync()
    times, ids = [], []
    start = time.perf_counter()
    for i in range(calls):
        t = time.perf_counter()
        chk = experiment.checkpoint(
            path=data.name, metrics={"loss": float(i)}, primary_metric=PRIMARY, quiet=True
        )
        times.append(time.perf_counter() - t)
        ids.append(chk.id)
    experiment.flush()
    durable = time.perf_counter() - start
    experiment.stop()
    return Run(experiment.id, ids, times, durable)


def run_keepsake(python: str, project_dir: Path, data: Data, calls: int) -> Run:
    out = project_dir / "result.json"
    env = {
        **os.environ,
        "KEEPSAKE_NO_ANALYTICS": "1",
        "HOME": str(project_dir.parent / "home"),
        "TMPDIR": str(project_dir.parent),
    }
    args = [python, "-c", KEEPSAKE_DRIVER, data.name, str(calls), str(out)]
    result = subprocess.run(args, cwd=project_dir, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"Keepsake 0.4.2 driver failed:\n{result.stdout}\n{result.stderr}")
    return Run(**json.loads(out.read_text()))


def verify(project_dir: Path, run: Run, data: Data) -> None:
    """Fail unless the metadata names every checkpoint and each tarball holds the exact bytes."""
    repo = project_dir / ".keepsake"
    meta = json.loads((repo / "metadata" / "experiments" / f"{run.experiment}.json").read_text())
    recorded = {c["id"] for c in meta.get("checkpoints") or ()}
    if missing := [i for i in run.ids if i not in recorded]:
        sys.exit(f"FAIL: {len(missing)} checkpoint(s) missing from {run.experiment}'s metadata")
    for chk in run.ids:
        tarball = repo / "checkpoints" / f"{chk}.tar.gz"
        found = []
        with gzip.open(tarball) as gz:
            with tarfile.open(fileobj=gz, mode="r|") as tar:
                for member in tar:
                    if member.isfile():
                        found.append((member.name, member.size, sha256(tar.extractfile(member))))
            while gz.read(CHUNK):  # to the end of the stream: gzip checks its CRC and length
                pass
        if found != [(f"{chk}/{data.name}", data.size, data.sha256)]:
            sys.exit(f"FAIL: {tarball} holds {[(n, s) for n, s, _ in found]}, not {data}")
        tarball.unlink()  # keep the disk from filling up with gigabytes


def sha256(stream) -> str:
    digest = hashlib.sha256()
    while block := stream.read(CHUNK):
        digest.update(block)
    return digest.hexdigest()


def time_copies(src: Path, times: int, sync: bool = False) -> list[float]:
    """shutil.copyfile to a new name each time, as a checkpoint must create new files."""
    out = []
    for i in range(times):
        dest = src.with_suffix(f".copy{i}")
        if sync:
            os.sync()
        t = time.perf_counter()
        shutil.copyfile(src, dest)
        out.append(time.perf_counter() - t)
        if src.stat().st_size > MiB:
            dest.unlink()  # big copies go at once: keep the disk from filling up
    for dest in src.parent.glob(f"{src.stem}.copy*"):
        dest.unlink()
    return out


def time_tar_czf(src: Path, repeats: int) -> list[float]:
    out = []
    dest = src.with_suffix(".tar.gz")
    for _ in range(repeats):
        os.sync()
        t = time.perf_counter()
        subprocess.run(["tar", "czf", dest, "-C", src.parent, src.name], check=True)
        out.append(time.perf_counter() - t)
        dest.unlink()
    return out


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(p / 100 * len(ordered)) - 1)]


def series_stats(calls: list[float]) -> dict[str, float]:
    first, last = statistics.median(calls[:10]), statistics.median(calls[-10:])
    return {
        "p50": percentile(calls, 50),
        "p99": percentile(calls, 99),
        "first": calls[0],
        "first10": first,
        "last10": last,
        "flat": last / first,
    }


def medians(stats: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(s[key] for s in stats) for key in stats[0]}


def size_label(size: int) -> str:
    if size >= 1024 * MiB:
        return f"{size / 1024 / MiB:g} GB"
    return f"{size // 1024} KB" if size < MiB else f"{size / MiB:g} MB"


def table(title: str, header: list[str], rows: list[list]) -> None:
    print(f"\n{title}")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [str(row[0]).ljust(widths[0])] + [
            str(c).rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        print("  " + "  ".join(cells))


def reference_python() -> str | None:
    for venv in REFERENCE_VENVS:
        python = Path(venv) / "bin" / "python"
        if venv and python.is_file():
            return str(python)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 MB and 128 MB, not 100 MB, 1 GB")
    parser.add_argument("--no-reference", action="store_true", help="skip Keepsake 0.4.2")
    parser.add_argument("--repeats", type=int, default=5, help="runs per measurement")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # tables and progress in order
    reference = None if args.no_reference else reference_python()
    if not args.no_reference and reference is None:
        print("Keepsake 0.4.2 not found: measuring git_keepsake only", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench-checkpoint-") as tmp:
        Bench(Path(tmp), reference, args.repeats).run(args.quick)


class Bench:
    def __init__(self, tmp: Path, reference: str | None, repeats: int):
        os.environ["XDG_CACHE_HOME"] = str(tmp / "cache")  # git_keepsake's staging folder
        os.environ["GIT_KEEPSAKE_STRICT"] = "1"  # a failed background write fails the run
        (tmp / "home").mkdir()
        self.repeats = repeats
        self.tools = {"git_keepsake": run_git_keepsake}
        if reference:
            self.tools["keepsake 0.4.2"] = functools.partial(run_keepsake, reference)
        self.dirs = {name: tmp / name.split()[0] for name in self.tools}
        self.data_dir = tmp / "data"
        for d in [self.data_dir, *self.dirs.values()]:
            d.mkdir()
            (d / "keepsake.yaml").write_text(CONFIG)

    def data(self, name: str, size: int) -> Data:
        """A random file in the data folder, hard-linked into every tool's project."""
        data = make_file(self.data_dir / name, size)
        for d in self.dirs.values():
            os.link(self.data_dir / name, d / name)
        return data

    def measure(self, data: Data, calls: int, repeats: int) -> dict[str, list[Run]]:
        """Each tool `repeats` times, interleaved: the disk's background writeback of one
        run slows whichever run comes next, so every tool gets its share of it."""
        runs: dict[str, list[Run]] = {name: [] for name in self.tools}
        for _ in range(repeats):
            for name, run in self.tools.items():
                runs[name].append(run(self.dirs[name], data, calls))
                verify(self.dirs[name], runs[name][-1], data)
                (self.dirs[name] / "result.json").unlink(missing_ok=True)
        print(f"  measured {size_label(data.size)}", file=sys.stderr, flush=True)
        return runs

    def run(self, quick: bool) -> None:
        medium, large = (10 * MiB, 128 * MiB) if quick else (100 * MiB, 1024 * MiB)
        small, copy_flat = self.small_series(self.data("small.pth", 1024))
        call = self.medium_call(self.data("medium.pth", medium))
        speed = self.large_throughput(self.data("large.pth", large))
        print("\nall tarballs verified: gzip stream and CRC, member name, size, SHA-256, metadata")
        if "keepsake 0.4.2" in speed:
            speed_target = speed["keepsake 0.4.2"]
            speed_text = f"at least Keepsake 0.4.2's {speed_target:.0f} MiB/s"
        else:
            speed_target, speed_text = 0.0, "(no Keepsake 0.4.2 to compare)"
        print("targets (git_keepsake):")
        for ok, text in [
            (small["p50"] < 0.002, f"1 KB p50 {small['p50'] * 1000:.2f} ms, under 2 ms"),
            (
                small["flat"] <= FLAT,
                f"1 KB calls 91-100 {small['flat']:.2f}x calls 1-10, flat "
                f"(noise: copyfile {copy_flat:.2f}x)",
            ),
            (call <= AS_COPY, f"{size_label(medium)} call {call:.2f}x a copy, at most {AS_COPY}x"),
            (
                speed["git_keepsake"] >= speed_target,
                f"{size_label(large)} at {speed['git_keepsake']:.0f} MiB/s, {speed_text}",
            ),
        ]:
            print(f"  {'ok    ' if ok else 'MISSED'}  {text}")

    def small_series(self, data: Data) -> tuple[dict[str, float], float]:
        """1 KB, 100 calls in a row: git_keepsake's statistics, copyfile's last/first ratio."""
        n = max(5, self.repeats)
        copies = [time_copies(self.data_dir / data.name, SMALL_CALLS) for _ in range(n)]
        series = {"copyfile": [series_stats(c) for c in copies]}
        for name, runs in self.measure(data, SMALL_CALLS, n).items():
            series[name] = [series_stats(r.calls) for r in runs]
        stats = {name: medians(s) for name, s in series.items()}
        copy = stats["copyfile"]["p50"]
        rows = []
        for name, s in stats.items():
            ms = [f"{s[k] * 1000:.3f}" for k in ("p50", "p99", "first", "first10", "last10")]
            rows.append([name, *ms, f"{s['flat']:.2f}x", f"{s['p50'] / copy:.1f}x"])
        table(
            f"{SMALL_CALLS} checkpoint() calls in a row, 1 KB file (ms; median of {n} runs)",
            ["", "p50", "p99", "first", "median 1-10", "median 91-100", "last/first", "p50/copy"],
            rows,
        )
        return stats["git_keepsake"], stats["copyfile"]["flat"]

    def medium_call(self, data: Data) -> float:
        """The call alone, each in a fresh experiment; git_keepsake's call/copy ratio."""
        n = max(5, self.repeats)
        copy = statistics.median(time_copies(self.data_dir / data.name, n, sync=True))
        rows = [["copyfile", f"{copy * 1000:.1f}", "1.00x", ""]]
        ratios = {}
        for name, runs in self.measure(data, 1, n).items():
            call = statistics.median(r.calls[0] for r in runs)
            durable = statistics.median(r.durable for r in runs)
            ratios[name] = call / copy
            rows.append([name, f"{call * 1000:.1f}", f"{call / copy:.2f}x", f"{durable:.2f}"])
        table(
            f"checkpoint() call, {size_label(data.size)} file (median of {n})",
            ["", "call ms", "call/copy", "durable s"],
            rows,
        )
        return ratios["git_keepsake"]

    def large_throughput(self, data: Data) -> dict[str, float]:
        """First call until durable; MiB/s per tool."""
        mib = data.size / MiB
        src = self.data_dir / data.name
        copy = statistics.median(time_copies(src, self.repeats, sync=True))
        tar = statistics.median(time_tar_czf(src, TAR_REPEATS))
        rows = [
            ["copyfile", "", f"{copy:.2f}", f"{mib / copy:.0f}", "1.00x", f"{tar / copy:.2f}x"],
            ["tar czf", "", f"{tar:.2f}", f"{mib / tar:.0f}", f"{copy / tar:.2f}x", "1.00x"],
        ]
        speeds = {}
        for name, runs in self.measure(data, 1, self.repeats).items():
            call = statistics.median(r.calls[0] for r in runs)
            durable = statistics.median(r.durable for r in runs)
            speeds[name] = mib / durable
            rows.append(
                [name, f"{call:.2f}", f"{durable:.2f}", f"{mib / durable:.0f}"]
                + [f"{copy / durable:.2f}x", f"{tar / durable:.2f}x"]
            )
        table(
            f"{size_label(data.size)} file, first call until durable in the repository "
            f"(median of {self.repeats}; speed ratios: higher is faster)",
            ["", "call s", "durable s", "MiB/s", "vs copy", "vs tar czf"],
            rows,
        )
        return speeds


if __name__ == "__main__":
    main()
