"""S3 and GCS repositories end to end: a training script records into a bucket, then the CLI
reads it back from elsewhere with -R. Also what goes wrong: outages, credentials, buckets."""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from git_keepsake import Project
from git_keepsake.errors import AccessDenied, StorageUnavailable
from git_keepsake.storage import open_storage
from tests.conftest import GIT_KEEPSAKE, git, new_bucket_name, run_script

TRAIN = textwrap.dedent(
    """
    import os, git_keepsake as keepsake
    experiment = keepsake.init(path=".", params={"lr": 0.01})
    for step in range(3):
        with open("weights.bin", "wb") as f:
            f.write(os.urandom(200_000) + bytes([step]))
        os.makedirs("out", exist_ok=True)
        with open("out/log.txt", "w") as f:
            f.write(f"step {step}\\n")
        experiment.checkpoint(path="weights.bin", step=step, metrics={"loss": 1.0 / (step + 1)},
                              primary_metric=("loss", "minimize"))
    experiment.stop()
    print(experiment.id, experiment.checkpoints[-1].id)
    """
)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [GIT_KEEPSAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(params=["s3", "gs"])
def scheme(request):
    request.getfixturevalue("s3_env" if request.param == "s3" else "gcs_env")
    return request.param


@pytest.mark.parametrize("prefix", ["", "/team/vision"], ids=["no-prefix", "prefix"])
def test_record_into_a_bucket_then_ls_show_checkout_from_elsewhere(
    scheme, prefix, git_project, tmp_path
):
    url = f"{scheme}://{new_bucket_name()}{prefix}"
    (git_project / "keepsake.yaml").write_text(f'repository: "{url}"\n')
    git("add", "keepsake.yaml", cwd=git_project)
    git("commit", "-q", "-m", "use a bucket", cwd=git_project)
    done = run_script(TRAIN, cwd=git_project)
    assert done.returncode == 0, done.stderr
    experiment_id, last_checkpoint = done.stdout.split()
    weights = (git_project / "weights.bin").read_bytes()

    elsewhere = tmp_path / "elsewhere"  # not a git repo, no keepsake.yaml: only -R
    elsewhere.mkdir()
    ls = cli("ls", "--json", "-R", url, cwd=elsewhere)
    assert ls.returncode == 0, ls.stderr
    [listed] = json.loads(ls.stdout)
    assert listed["id"] == experiment_id
    assert listed["latest_checkpoint"]["id"] == last_checkpoint
    assert listed["best_checkpoint"]["id"] == last_checkpoint  # lowest loss

    show = cli("show", experiment_id[:7], "-R", url, cwd=elsewhere)
    assert show.returncode == 0, show.stderr
    assert "lr" in show.stdout and last_checkpoint[:7] in show.stdout

    out = tmp_path / "restored"
    checkout = cli("checkout", last_checkpoint[:7], "-R", url, "-o", str(out), cwd=elsewhere)
    assert checkout.returncode == 0, checkout.stderr
    assert (out / "weights.bin").read_bytes() == weights
    # The code comes from the experiment's tarball: there is no git repository here.
    assert (out / "train.py").read_text() == "print('train')\n"
    assert (out / "keepsake.yaml").read_text() == f'repository: "{url}"\n'

    # The layout is Keepsake's, under the prefix.
    storage = open_storage(url, tmp_path)
    keys = set(storage.list(""))
    assert "repository.json" in keys
    assert f"metadata/experiments/{experiment_id}.json" in keys
    assert f"checkpoints/{last_checkpoint}.tar.gz" in keys
    assert f"experiments/{experiment_id}.tar.gz" in keys

    rm = cli("rm", "-f", experiment_id[:7], "-R", url, cwd=elsewhere)
    assert rm.returncode == 0, rm.stderr
    assert [k for k in storage.list("") if k != "repository.json"] == []


def test_diff_and_checkpoint_rm_on_a_bucket(scheme, project, tmp_path):
    url = f"{scheme}://{new_bucket_name()}/runs"
    ids = []
    for lr in (0.1, 0.2):
        (project / "weights.bin").write_bytes(os.urandom(1000))
        e = Project(repository=url).experiments.create(path=".", params={"lr": lr})
        e.checkpoint(path="weights.bin", step=1, metrics={"loss": lr})
        e.checkpoint(path="weights.bin", step=2, metrics={"loss": lr / 2})
        e.stop()
        ids.append((e.id, [c.id for c in e.checkpoints]))
    diff = cli("diff", ids[0][0][:8], ids[1][0][:8], "-R", url, cwd=tmp_path)
    assert diff.returncode == 0, diff.stderr
    assert "0.1" in diff.stdout and "0.2" in diff.stdout

    first_checkpoint = ids[0][1][0]
    rm = cli("rm", "-f", first_checkpoint[:8], "-R", url, cwd=tmp_path)
    assert rm.returncode == 0, rm.stderr
    experiment = Project(repository=url, directory=tmp_path).experiments.get(ids[0][0])
    assert [c.id for c in experiment.checkpoints] == ids[0][1]  # metrics stay, as in Keepsake
    assert [c.files_removed for c in experiment.checkpoints] == [True, False]
    assert not open_storage(url, tmp_path).exists(f"checkpoints/{first_checkpoint}.tar.gz")


def test_a_repeated_ls_downloads_only_what_changed(scheme, project, tmp_path, monkeypatch):
    url = f"{scheme}://{new_bucket_name()}"
    made = []
    for n in range(5):
        e = Project(repository=url).experiments.create(params={"n": n})
        e.checkpoint(step=0, metrics={"loss": n})
        e.stop()
        made.append(e.id)

    fetched = []
    from git_keepsake.storage.remote import RemoteStorage

    real = RemoteStorage.get_many

    def counting(self, keys):
        keys = list(keys)
        if keys and all(k.startswith("metadata/experiments/") for k in keys):
            fetched.append(sorted(k.rsplit("/", 1)[-1][:-5] for k in keys))
        return real(self, keys)

    monkeypatch.setattr(RemoteStorage, "get_many", counting)
    reader = Project(repository=url, directory=tmp_path)
    assert sorted(e.id for e in reader.experiments.list()) == sorted(made)
    assert fetched == [sorted(made)]  # cold: everything, in one concurrent batch
    assert len(reader.experiments.list()) == 5
    assert fetched[1:] == []  # warm: nothing

    e = Project(repository=url).experiments.create(params={"n": 1})
    e.checkpoint(step=1, metrics={"loss": 0.5})
    e.stop()
    Project(repository=url, directory=tmp_path).experiments.list()
    assert [f for f in fetched[1:] if f] == [[e.id]]  # only the new one


# --- faults ---


def test_s3_outage_mid_run_training_goes_on_and_flush_completes(s3_env, project, monkeypatch):
    """The server goes away for a while; checkpoint() keeps returning at once, and when the
    server is back, flush() writes everything that was staged meanwhile."""
    monkeypatch.delenv("GIT_KEEPSAKE_STRICT")
    url = f"s3://{new_bucket_name()}/runs"
    experiment = Project(repository=url).experiments.create(params={"lr": 1})
    (project / "w.bin").write_bytes(b"before")
    experiment.checkpoint(path="w.bin", step=0)
    experiment.flush()

    s3_env.stop()
    try:
        for step in range(1, 4):
            (project / "w.bin").write_bytes(b"during %d" % step)
            experiment.checkpoint(path="w.bin", step=step, metrics={"loss": 1 / step})
        assert not experiment.flush(timeout=0.5)  # still waiting on the server
    finally:
        s3_env.start()
    assert experiment.flush(timeout=60)
    experiment.stop()

    storage = open_storage(url, project)
    for checkpoint in experiment.checkpoints:
        assert storage.exists(f"checkpoints/{checkpoint.id}.tar.gz")
    stored = json.loads(storage.get_bytes(f"metadata/experiments/{experiment.id}.json"))
    assert [c["step"] for c in stored["checkpoints"]] == [0, 1, 2, 3]
    restored = Project(repository=url, directory=project).checkpoints.get(
        experiment.checkpoints[-1].id
    )
    assert restored.open("w.bin").read() == b"during 3"


def test_ctrl_c_while_exit_waits_on_an_outage_leaves_it_staged(s3_env, project, monkeypatch):
    """Exit waits for pending writes, for up to 30 minutes of outage: Ctrl-C must end that wait
    at once, with one line saying where the files stay, and no traceback."""
    import signal
    import sys
    import time

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("GIT_KEEPSAKE_STRICT")
    monkeypatch.setenv("XDG_CACHE_HOME", str(project / "cache"))
    (project / "keepsake.yaml").write_text('repository: "s3://some-bucket"\n')
    code = textwrap.dedent(
        """
        import git_keepsake as keepsake
        open("w.bin", "wb").write(b"weights")
        experiment = keepsake.init(disable_heartbeat=True)
        experiment.checkpoint(path="w.bin", step=1)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=project,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines = []
    for line in process.stderr:  # until exit is waiting on the writes
        lines.append(line)
        if "waiting for" in line:
            break
    interrupted = time.monotonic()
    process.send_signal(signal.SIGINT)
    try:
        _, rest = process.communicate(timeout=15)  # the old code waited for 30 minutes
    finally:
        process.kill()
    assert time.monotonic() - interrupted < 10
    assert "Traceback" not in rest, lines
    assert re.search(
        r"interrupted: \d write\(s\) to s3://some-bucket not done; their files stay", rest
    )
    staged = list((project / "cache").rglob("job.json"))
    assert staged  # the journal is there for the next run to finish


def test_unreachable_endpoint_is_one_clear_line(s3_env, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    done = cli("ls", "-R", "s3://some-bucket/x", cwd=tmp_path)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("error: cannot reach s3://some-bucket/x: Could not connect")
    assert lines[1].startswith("hint: check the network")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("scheme_", ["s3", "gs"])
def test_missing_bucket_on_read_names_it(scheme_, request, tmp_path):
    request.getfixturevalue("s3_env" if scheme_ == "s3" else "gcs_env")
    done = cli("ls", "-R", f"{scheme_}://no-such-bucket-here", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.splitlines()[0] == "error: bucket 'no-such-bucket-here' does not exist"
    assert "Traceback" not in done.stderr


def test_empty_prefix_in_an_existing_bucket_is_no_repository(s3_env, tmp_path):
    url = f"s3://{new_bucket_name()}"
    open_storage(url, tmp_path).put_bytes("other/thing", b"x")
    done = cli("ls", "-R", url + "/typo", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: there is no repository at {url}/typo")


@pytest.fixture
def s3_requires_auth(s3_env):
    """moto checks credentials (against its IAM, where ours don't exist) while this runs."""
    from moto import settings

    before = settings.INITIAL_NO_AUTH_ACTION_COUNT
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    yield
    settings.INITIAL_NO_AUTH_ACTION_COUNT = before


def test_bad_s3_credentials_are_one_clear_line(s3_requires_auth, tmp_path):
    done = cli("ls", "-R", "s3://some-bucket", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    first, hint = done.stderr.strip().splitlines()
    assert first.startswith("error: the credentials for s3://some-bucket were refused: ")
    assert hint.startswith("hint: set AWS_PROFILE or AWS_ACCESS_KEY_ID")


def test_bad_credentials_while_training_warn_and_training_goes_on(
    s3_requires_auth, project, monkeypatch
):
    monkeypatch.delenv("GIT_KEEPSAKE_STRICT")
    code = (
        "import git_keepsake as k\n"
        "e = k.Project(repository='s3://some-bucket').experiments.create(params={'a': 1})\n"
        "e.checkpoint(step=1)\n"
        "e.stop()\n"
        "print('trained')\n"
    )
    done = run_script(code, cwd=project)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "trained\n"
    assert "credentials for s3://some-bucket were refused" in done.stderr
    assert "Traceback" not in done.stderr


def test_no_s3_credentials_at_all(s3_env, tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    done = cli("ls", "-R", "s3://some-bucket", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.splitlines()[0] == "error: no credentials to reach s3://some-bucket"


def test_transient_errors_are_retried_then_succeed(s3_env, tmp_path, monkeypatch):
    """Throttling can't be had from moto on demand: fail the first two requests by hand."""
    from botocore.exceptions import ClientError

    from git_keepsake.storage import remote

    monkeypatch.setattr(remote, "RETRY_DELAYS", (0.01, 0.01, 0.01))
    storage = open_storage(f"s3://{new_bucket_name()}", tmp_path)
    storage.put_bytes("k", b"v")
    real = storage.client.get_object
    failures = iter([503, 500])

    def flaky(**kwargs):
        status = next(failures, None)
        if status is None:
            return real(**kwargs)
        error = {"Code": "SlowDown" if status == 503 else "InternalError", "Message": "busy"}
        raise ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": status}}, "Get")

    monkeypatch.setattr(storage.client, "get_object", flaky)
    assert storage.get_bytes("k") == b"v"

    failures = iter([503] * 10)
    with pytest.raises(StorageUnavailable, match="cannot reach s3://.*busy"):
        storage.get_bytes("k")


def test_gcs_refused_credentials_map_to_access_denied(gcs_env, tmp_path, monkeypatch):
    """The emulator takes any credentials: a 401 from the real service, by hand."""
    from google.api_core.exceptions import Unauthorized

    storage = open_storage(f"gs://{new_bucket_name()}", tmp_path)

    def refuse(*args, **kwargs):
        raise Unauthorized("Invalid Credentials")

    monkeypatch.setattr(storage.client, "list_blobs", refuse)
    with pytest.raises(AccessDenied, match="credentials for gs://.* were refused"):
        list(storage.list(""))


# --- round trips and work not to repeat ---


def test_repository_json_is_looked_for_once(s3_env, project, monkeypatch):
    """Not before every write (each look is a round trip), and `ls -R` reads it once."""
    from git_keepsake.storage.s3 import S3Storage

    looks = []
    for name in ("exists", "get_bytes"):
        real = getattr(S3Storage, name)

        def counted(self, key, _real=real, _name=name):
            if key == "repository.json":
                looks.append(_name)
            return _real(self, key)

        monkeypatch.setattr(S3Storage, name, counted)
    url = f"s3://{new_bucket_name()}"
    experiment = Project(repository=url).experiments.create(params={"a": 1})
    for step in range(5):
        experiment.checkpoint(step=step, metrics={"loss": step})
    experiment.stop()
    assert looks == ["get_bytes", "exists"]  # check_version at init; ensure_created once

    looks.clear()
    reader = Project(repository=url, directory=project).repository
    assert reader.is_present()
    reader.check_version()
    assert looks == ["get_bytes"]


def test_a_transfer_dropped_mid_stream_is_produced_again(s3_env, tmp_path, monkeypatch):
    """A streamed upload can't rewind: after a dropped part, the retry tars again from the
    start, and the stored blob is whole (moto can't drop a connection on demand)."""
    from botocore.exceptions import EndpointConnectionError

    from git_keepsake.storage import remote, s3

    monkeypatch.setattr(remote, "RETRY_DELAYS", (0.01,))
    monkeypatch.setattr(s3, "MULTIPART_THRESHOLD", 6 << 20)
    monkeypatch.setattr(s3, "PART_SIZE", 5 << 20)
    storage = open_storage(f"s3://{new_bucket_name()}", tmp_path)
    storage.put_bytes("repository.json", b"{}")  # the bucket exists (the writer's case)
    real = storage.client.upload_part
    drops = iter([True])

    def dropping(**kwargs):
        if kwargs["PartNumber"] == 2 and next(drops, False):
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1")
        return real(**kwargs)

    monkeypatch.setattr(storage.client, "upload_part", dropping)
    data = os.urandom(13 << 20)
    produced = []

    def produce(out):
        produced.append(1)
        out.write(data)

    storage.put_stream("checkpoints/c.tar.gz", produce, size_hint=len(data))
    assert len(produced) == 2
    assert storage.get_bytes("checkpoints/c.tar.gz") == data
    assert storage.client.list_multipart_uploads(Bucket=storage.bucket).get("Uploads", []) == []


def test_exit_without_stop_stores_every_checkpoint_in_a_bucket(scheme, git_project):
    """The seed's iris script never calls stop(). Exit must write what checkpoint() staged as
    stop() would: the bucket clients' thread pools are still there when it does."""
    url = f"{scheme}://{new_bucket_name()}"
    (git_project / "keepsake.yaml").write_text(f'repository: "{url}"\n')
    script = TRAIN.replace("experiment.stop()\n", "")
    script = script.replace("range(3)", "range(10)")
    done = run_script(script, cwd=git_project, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr, done.stderr
    experiment_id = done.stdout.split()[0]
    ls = cli("ls", "--json", "-R", url, cwd=git_project)
    assert ls.returncode == 0, ls.stderr
    [listed] = json.loads(ls.stdout)
    assert listed["id"] == experiment_id
    assert listed["num_checkpoints"] == 10
    assert listed["status"] == "stopped"
