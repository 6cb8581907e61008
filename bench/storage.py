"""Benchmark git-keepsake against S3: a moto server on 127.0.0.1, in a process of its own.

Measured in one run:

* a big checkpoint (--size-mb MiB of random bytes, so nothing compresses), from the
  `checkpoint()` call until `flush()` returns with the tarball in the bucket, against boto3's
  `upload_file` with its default TransferConfig of the same tarball: MiB/s and the speed ratio
  (higher is faster). Where our time goes: the call (the staging copy), then the upload with
  the tarball streamed into it, and the tarring inside it, as timed in the background writer;
  and, alone on the same file, `write_tarball` and our S3 backend's `put_stream` of the file
  copied into its pipe (s3.py's transfer settings without tarring or staging);
* `git-keepsake ls -R s3://BUCKET` of 1,000 experiments (10 checkpoints each, in Keepsake's
  layout, put with boto3) from an empty folder outside git: with a fresh local index each time
  (cold) and with the one the last cold run left (warm), against `python -c pass` and
  `python -c "import boto3"`.

Times are medians of --repeats runs; in each, the checkpoint and the uploads alone take turns,
each going first in one run of three, so each gets its share of the noise. Every uploaded
object's size and every listing's rows are checked. Then `targets:` says ok/MISSED. Nothing
but 127.0.0.1 is contacted. The server keeps objects in memory (about 4x --size-mb at the
peak), not in temp files: a real bucket is not on the disk the checkpoint is staged and tarred
on. Its assembly of the parts at the end of each upload (CompleteMultipartUpload, copying the
whole object in Python) is shown apart: it is the same work whoever sent the parts, and the
noisiest part of the run.

Run from the repository root, in the venv git-keepsake is installed in:
    python bench/storage.py                            # 1 GiB, 3 repeats: 2-3 minutes
    python bench/storage.py --size-mb 64 --repeats 1   # quick
    python bench/storage.py --part-mb 8 --threads 4    # other s3.py transfer settings
The machine is shared and noisy: compare the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import git_keepsake as keepsake
from git_keepsake import metadata
from git_keepsake.storage import open_storage, s3
from git_keepsake.store import writer
from git_keepsake.tarball import write_tarball

MiB = 1024 * 1024
CHUNK = 16 * MiB
EXPERIMENTS = 1000
CHECKPOINTS = 10
UPLOAD_BUCKET = "bench-upload"
LS_BUCKET = "bench-ls"
TIMEOUT = 600  # seconds, for one command or the server to start
# Targets, from the issue.
UPLOAD_RATIO = 0.9  # our checkpoint's throughput over boto3's upload_file of the same tarball
WARM_LS_UNDER = 1.0  # seconds


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def moto_server(log: Path, largest: int):
    """`python -m moto.server` on a free port of 127.0.0.1; its URL until the block ends.

    It keeps objects up to `largest` bytes in memory, not in temp files: a real bucket's disk
    is not the one the checkpoint is staged and tarred on."""
    port = free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    env = {**os.environ, "MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": str(largest)}
    with open(log, "wb") as out:
        server = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"error: moto server did not start:\n{log.read_text()[-2000:]}")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def aws_env(endpoint: str, tmp: Path) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
    }


def make_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        for offset in range(0, size, CHUNK):
            f.write(os.urandom(min(CHUNK, size - offset)))


def instrument(log: dict[str, float]) -> None:
    """Time the writer's streamed upload and the tarring inside it, and the server's assembly
    of the parts (CompleteMultipartUpload) in any upload (this process only; nothing is
    edited)."""

    def timed(owner, name: str, label: str) -> None:
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                log[label] = log.get(label, 0.0) + time.perf_counter() - start

        setattr(owner, name, wrapper)

    timed(writer, "write_tarball", "tar")
    timed(s3.S3Storage, "put_stream", "upload")
    from botocore.client import BaseClient

    api_call = BaseClient._make_api_call

    def timed_call(self, operation: str, params: dict):
        if operation != "CompleteMultipartUpload":
            return api_call(self, operation, params)
        start = time.perf_counter()
        try:
            return api_call(self, operation, params)
        finally:
            log["assembly"] = log.get("assembly", 0.0) + time.perf_counter() - start

    BaseClient._make_api_call = timed_call


def checkpoint_once(project_dir: Path, log: dict[str, float]) -> tuple[dict[str, float], str]:
    """One training-like run: its times (call, tar, upload, total) and the checkpoint's ID."""
    project = keepsake.Project(directory=project_dir)
    experiment = project.experiments.create(path="train.py", params={"lr": 0.01}, quiet=True)
    experiment.flush()  # the experiment's own writes (and the S3 client) out of the way
    os.sync()
    log.clear()
    start = time.perf_counter()
    chk = experiment.checkpoint(path="weights.bin", step=1, metrics={"loss": 0.5}, quiet=True)
    call = time.perf_counter() - start
    experiment.flush()
    total = time.perf_counter() - start
    experiment.stop()
    return {"call": call, **log, "total": total}, chk.id


def upload_once(tarball: Path, key: str, ours: bool, log: dict[str, float]) -> dict[str, float]:
    """Our S3 backend's put_stream of the file (copied into its pipe, no tarring), or boto3's
    upload_file with its defaults, each with a new
    client that has connected before the clock starts (as the writer's has): its time, and the
    server's share of it."""
    import boto3

    storage = open_storage(f"s3://{UPLOAD_BUCKET}", tarball.parent)
    client = storage.client if ours else boto3.client("s3")
    client.head_bucket(Bucket=UPLOAD_BUCKET)
    os.sync()
    log.clear()
    start = time.perf_counter()
    if ours:

        def copy(out) -> None:
            with open(tarball, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)

        storage.put_stream(key, copy, size_hint=tarball.stat().st_size)
    else:
        client.upload_file(str(tarball), UPLOAD_BUCKET, key)
    return {key: time.perf_counter() - start, f"{key} assembly": log.get("assembly", 0.0)}


def bench_upload(tmp: Path, size: int, repeats: int) -> dict[str, float]:
    """Median seconds of each phase and upload; "bytes": the tarball's size."""
    import boto3

    project_dir = tmp / "project"
    project_dir.mkdir()
    (project_dir / "keepsake.yaml").write_text(f'repository: "s3://{UPLOAD_BUCKET}"\n')
    (project_dir / "train.py").write_text("print('train')\n")
    weights = project_dir / "weights.bin"
    make_file(weights, size)
    tarball = tmp / "weights.tar.gz"
    client = boto3.client("s3")
    client.create_bucket(Bucket=UPLOAD_BUCKET)
    log: dict[str, float] = {}
    instrument(log)
    runs: dict[str, list[float]] = {}

    def check(key: str) -> None:  # then delete it: the server holds every object in memory
        stored = client.head_object(Bucket=UPLOAD_BUCKET, Key=key)["ContentLength"]
        if stored != expected:
            sys.exit(f"FAIL: s3://{UPLOAD_BUCKET}/{key} has {stored} bytes, not {expected}")
        client.delete_object(Bucket=UPLOAD_BUCKET, Key=key)

    def checkpoint() -> dict[str, float]:
        result, chk = checkpoint_once(project_dir, log)
        check(f"checkpoints/{chk}.tar.gz")
        return result

    def upload(name: str, ours: bool) -> dict[str, float]:
        result = upload_once(tarball, name, ours, log)
        check(name)
        return result

    turns = [checkpoint, lambda: upload("put_stream", True), lambda: upload("boto3", False)]
    for i in range(repeats):
        os.sync()
        start = time.perf_counter()
        write_tarball(tarball, "0" * 64, [("weights.bin", weights)])
        times = {"tar alone": time.perf_counter() - start}
        expected = tarball.stat().st_size
        for turn in turns[i % 3 :] + turns[: i % 3]:  # each goes first in turn
            times.update(turn())
        # Without the server's assembly of the parts: moto's share, the same work whoever sent
        # the parts, and its noisiest (3-7 s for 1 GiB on a 2-core machine).
        times["total, client"] = times["total"] - times.get("assembly", 0.0)
        times["boto3, client"] = times["boto3"] - times["boto3 assembly"]
        for name, value in times.items():
            runs.setdefault(name, []).append(value)
        print(f"  upload {i + 1}/{repeats} done", file=sys.stderr, flush=True)
    weights.unlink()
    tarball.unlink()
    return {name: statistics.median(values) for name, values in runs.items()} | {"bytes": expected}


def experiment_json(rng: random.Random, created: dt.datetime) -> tuple[str, bytes]:
    """One experiment's metadata as Keepsake 0.4.2 writes it."""
    experiment_id = metadata.new_id()
    checkpoints = [
        {
            "id": metadata.new_id(),
            "created": metadata.format_time(created + dt.timedelta(seconds=10 * step)),
            "metrics": {"loss": rng.random(), "accuracy": rng.random()},
            "step": step,
            "path": "model.pth",
            "primary_metric": {"name": "loss", "goal": "minimize"},
        }
        for step in range(CHECKPOINTS)
    ]
    body = {
        "id": experiment_id,
        "created": metadata.format_time(created),
        "params": {"learning_rate": rng.choice([0.1, 0.01, 0.001]), "batch_size": 64},
        "host": "gpu-box",
        "user": "bench",
        "config": {"repository": f"s3://{LS_BUCKET}", "storage": ""},
        "command": "train.py",
        "path": ".",
        "python_version": "3.11.7",
        "python_packages": {"torch": "2.3.0", "numpy": "1.26.4"},
        "checkpoints": checkpoints,
        "keepsake_version": "0.4.2",
    }
    return experiment_id, json.dumps(body, indent=1).encode()


def populate(count: int) -> set[str]:
    """`count` experiments in the ls bucket, put concurrently; their IDs."""
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", config=Config(max_pool_connections=32))
    client.create_bucket(Bucket=LS_BUCKET)
    client.put_object(Bucket=LS_BUCKET, Key="repository.json", Body=b'{"version":1}')
    rng = random.Random(0)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    bodies = dict(experiment_json(rng, start + dt.timedelta(minutes=i)) for i in range(count))

    def put(item: tuple[str, bytes]) -> None:
        key = f"metadata/experiments/{item[0]}.json"
        client.put_object(Bucket=LS_BUCKET, Key=key, Body=item[1])

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(put, bodies.items()))
    return set(bodies)


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(
        argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"FAIL: {' '.join(argv)} exited {result.returncode}:\n{result.stderr.decode()}")
    return elapsed, result.stdout.decode()


def bench_ls(tmp: Path, repeats: int) -> dict[str, float]:
    """Median seconds of the baselines and of `ls`, cold and warm."""
    ids = populate(EXPERIMENTS)
    bin_dir = Path(sys.executable).parent  # not resolved: a venv's python is a symlink
    ls = [str(bin_dir / "git-keepsake"), "ls", "-R", f"s3://{LS_BUCKET}"]
    empty = tmp / "empty"  # not in a git repository: the index goes to $XDG_CACHE_HOME
    empty.mkdir()
    short = {i[:7] for i in ids}

    def timed(argv: list[str], cache: Path) -> float:
        elapsed, out = run(argv, empty, {**os.environ, "XDG_CACHE_HOME": str(cache)})
        rows = out.splitlines()[1:]  # under the header, one experiment each, by short ID
        if argv is ls and (len(rows) != len(ids) or {r[:7] for r in rows} != short):
            sys.exit(f"FAIL: ls printed {len(rows)} rows, not the {len(ids)} experiments put")
        return elapsed

    out = {}
    for name, argv in {
        "python -c pass": [sys.executable, "-c", "pass"],
        'python -c "import boto3"': [sys.executable, "-c", "import boto3"],
    }.items():
        timed(argv, tmp)  # a warm-up: file cache, .pyc
        out[name] = statistics.median(timed(argv, tmp) for _ in range(repeats))
    name = f"git-keepsake ls -R s3://, {len(ids):,} experiments"
    # Cold: a fresh cache each time. Warm: the last one's, after a warm-up as above.
    out[f"{name}, cold"] = statistics.median(timed(ls, tmp / f"cache-{i}") for i in range(repeats))
    warm = [timed(ls, tmp / f"cache-{repeats - 1}") for _ in range(repeats + 1)]
    out[f"{name}, warm"] = statistics.median(warm[1:])
    return out


def table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows] if i < len(r)) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [
            row[0].ljust(widths[0]),
            *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=False)),
        ]
        print("  " + "  ".join(cells).rstrip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="checkpoint size, MiB")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement")
    parser.add_argument("--part-mb", type=int, help="override s3.PART_SIZE, MiB")
    parser.add_argument("--threshold-mb", type=int, help="override s3.MULTIPART_THRESHOLD, MiB")
    parser.add_argument("--threads", type=int, help="override s3.TRANSFER_THREADS")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server on kill, too
    if args.part_mb:
        s3.PART_SIZE = args.part_mb * MiB
    if args.threshold_mb:
        s3.MULTIPART_THRESHOLD = args.threshold_mb * MiB
    if args.threads:
        s3.TRANSFER_THREADS = args.threads
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "git-keepsake").is_file():
        print(f"error: no git-keepsake in {bin_dir} (pip install -e .)", file=sys.stderr)
        return 2

    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as name:
        tmp = Path(name)
        with moto_server(tmp / "moto.log", args.size_mb * MiB + CHUNK) as endpoint:
            os.environ.update(aws_env(endpoint, tmp))
            os.environ["XDG_CACHE_HOME"] = str(tmp / "cache")  # staging, outside git
            os.environ["GIT_KEEPSAKE_STRICT"] = "1"  # a failed background write fails the run
            upload = bench_upload(tmp, args.size_mb * MiB, args.repeats)
            listing = bench_ls(tmp, args.repeats)

    mib = upload["bytes"] / MiB
    ours, boto = mib / upload["total"], mib / upload["boto3"]
    size = f"{args.size_mb / 1024:g} GiB" if args.size_mb >= 1024 else f"{args.size_mb} MiB"

    def speed(key: str) -> list[str]:
        return [
            f"{upload[key]:.2f}",
            f"{mib / upload[key]:.0f}",
            f"{upload['boto3'] / upload[key]:.2f}x",
        ]

    print(
        f"\nS3 on a moto server, {size} of random bytes (median of {args.repeats}; s3.py: "
        f"multipart from {s3.MULTIPART_THRESHOLD // MiB} MiB, {s3.PART_SIZE // MiB} MiB parts, "
        f"{s3.TRANSFER_THREADS} threads; boto3's defaults: 8 MiB, 8 MiB, 10)"
    )
    python = listing["python -c pass"]
    table(
        ["", "s", "MiB/s", "speed vs boto3"],
        [
            ["checkpoint() call to flush() returning", *speed("total")],
            ["  the call (staging copy)", f"{upload['call']:.2f}"],
            ["  upload, tarball streamed into it", f"{upload.get('upload', 0):.2f}"],
            ["    tarring, inside the upload", f"{upload.get('tar', 0):.2f}"],
            ["    moto assembling the parts", f"{upload.get('assembly', 0):.2f}"],
            ["write_tarball alone, same file", f"{upload['tar alone']:.2f}"],
            ["S3Storage.put_stream alone, same tarball", *speed("put_stream")],
            ["  moto assembling the parts", f"{upload['put_stream assembly']:.2f}"],
            ["boto3 upload_file alone, same tarball", *speed("boto3")],
            ["  moto assembling the parts", f"{upload['boto3 assembly']:.2f}"],
        ],
    )
    client, boto_client = upload["total, client"], upload["boto3, client"]
    print(
        f"  without moto's assembly: checkpoint {client:.2f} s, boto3 {boto_client:.2f} s: "
        f"{boto_client / client:.2f}x"
    )
    table(
        ["", "s", "/python"],
        [[name, f"{t:.2f}", f"{t / python:.1f}x"] for name, t in listing.items()],
    )
    *_, cold, warm = listing.values()
    print("targets:")
    for ok, text in [
        (
            ours / boto >= UPLOAD_RATIO,
            f"{size} checkpoint at {ours:.0f} MiB/s, {ours / boto:.2f}x boto3's upload_file "
            f"at {boto:.0f} MiB/s (target at least {UPLOAD_RATIO}x)",
        ),
        (
            warm < WARM_LS_UNDER,
            f"`ls` of {EXPERIMENTS:,} experiments: warm {warm:.2f} s, cold {cold:.2f} s "
            f"(target warm under {WARM_LS_UNDER:g} s)",
        ),
    ]:
        print(f"  {'ok    ' if ok else 'MISSED'}  {text}")
    print(f"(whole run: {time.perf_counter() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
