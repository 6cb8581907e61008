"""Micro benchmark: write_tarball on incompressible weights against cp, tar czf and tarfile.

Usage: python bench/tarball_micro.py [--size-mb 1024] [--runs 3]

Everything goes through the page cache (no fsync), as a checkpoint write does; dirty pages are
synced before each timed run so one run's writeback does not slow down the next.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

TOP = "0" * 64


def timed(action, out: Path) -> float:
    out.unlink(missing_ok=True)
    os.sync()
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="size of the random file, MiB")
    parser.add_argument("--runs", type=int, default=3, help="runs per method; the median counts")
    args = parser.parse_args()

    # Runnable from a checkout without installing the package.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from git_keepsake.tarball import write_tarball

    with tempfile.TemporaryDirectory(prefix="tarball-micro-", dir="/tmp") as tmp:
        tmp = Path(tmp)
        src = tmp / "model.pth"
        with open(src, "wb") as f:
            f.writelines(os.urandom(1024 * 1024) for _ in range(args.size_mb))
        out = tmp / "out"

        def stdlib_tarfile():
            with tarfile.open(out, "w:gz") as tar:
                tar.add(src, f"{TOP}/model.pth")

        methods = {
            "cp (shutil.copyfile)": lambda: shutil.copyfile(src, out),
            "tar czf": lambda: subprocess.run(
                ["tar", "czf", str(out), "-C", str(tmp), "model.pth"], check=True
            ),
            'tarfile.open("w:gz")': stdlib_tarfile,
            "write_tarball": lambda: write_tarball(out, TOP, [("model.pth", src)]),
        }
        print(
            f"{args.size_mb} MiB of os.urandom, median of {args.runs} runs, "
            f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, "
            f"zlib {zlib.ZLIB_RUNTIME_VERSION}"
        )
        print(f"{'method':<22} {'seconds':>8} {'MiB/s':>8} {'vs cp':>7} {'size':>7}")
        cp_seconds = None
        for name, action in methods.items():
            seconds = statistics.median(timed(action, out) for _ in range(args.runs))
            cp_seconds = cp_seconds or seconds
            size = out.stat().st_size / src.stat().st_size
            print(
                f"{name:<22} {seconds:8.2f} {args.size_mb / seconds:8.0f} "
                f"{cp_seconds / seconds:7.2f} {size:7.3f}"
            )


if __name__ == "__main__":
    main()
