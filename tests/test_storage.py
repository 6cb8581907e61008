"""The storage contract: disk, S3 (moto's server) and GCS (the emulator) behave the same."""

from __future__ import annotations

import os
import threading

import pytest

from git_keepsake.errors import BucketNotFound, ConfigError, NotFound, StorageError
from git_keepsake.storage import open_storage
from tests.conftest import new_bucket_name


@pytest.fixture(params=["", "team/project"], ids=["no-prefix", "prefix"])
def storage(request, repository_url, tmp_path):
    url = repository_url + (f"/{request.param}" if request.param else "")
    return open_storage(url, tmp_path)


def test_bytes_round_trip_and_overwrite(storage):
    storage.put_bytes("metadata/experiments/a.json", b'{"id":"a"}')
    assert storage.get_bytes("metadata/experiments/a.json") == b'{"id":"a"}'
    storage.put_bytes("metadata/experiments/a.json", b'{"id":"b"}')
    assert storage.get_bytes("metadata/experiments/a.json") == b'{"id":"b"}'
    storage.put_bytes("empty", b"")
    assert storage.get_bytes("empty") == b""


def test_missing_keys(storage, tmp_path):
    storage.put_bytes("present", b"x")  # the bucket exists: a missing key is just NotFound
    with pytest.raises(NotFound, match="absent"):
        storage.get_bytes("absent")
    target = tmp_path / "downloaded"
    with pytest.raises(NotFound):
        storage.get_file("absent", target)
    assert not target.exists()
    assert list(tmp_path.glob("downloaded*")) == []  # nothing half-written
    assert not storage.exists("absent")
    storage.delete("absent")  # not an error
    assert storage.get_many(["present", "absent"]) == {"present": b"x"}


def test_exists_and_delete(storage):
    storage.put_bytes("a/b", b"1")
    assert storage.exists("a/b")
    assert not storage.exists("a")  # a folder is not a blob
    storage.delete("a/b")
    assert not storage.exists("a/b")
    with pytest.raises(NotFound):
        storage.get_bytes("a/b")


def test_list_is_recursive_and_scoped(storage):
    for key in ["metadata/experiments/1.json", "metadata/heartbeats/1.json", "metadata/x"]:
        storage.put_bytes(key, b"{}")
    storage.put_bytes("checkpoints/c.tar.gz", b"")
    storage.put_bytes("metadata-not/y", b"")
    assert sorted(storage.list("metadata/")) == [
        "metadata/experiments/1.json",
        "metadata/heartbeats/1.json",
        "metadata/x",
    ]
    assert list(storage.list("nothing/here/")) == []
    assert storage.list_versions("nothing/") == {}


def test_versions_change_when_the_blob_does(storage):
    storage.put_bytes("metadata/experiments/a.json", b"one")
    storage.put_bytes("metadata/experiments/b.json", b"two")
    before = storage.list_versions("metadata/experiments/")
    assert set(before) == {"metadata/experiments/a.json", "metadata/experiments/b.json"}
    storage.put_bytes("metadata/experiments/a.json", b"one, then more")
    after = storage.list_versions("metadata/experiments/")
    assert after["metadata/experiments/a.json"] != before["metadata/experiments/a.json"]
    assert after["metadata/experiments/b.json"] == before["metadata/experiments/b.json"]
    assert None not in after.values()


def test_prefixes_keep_repositories_apart(repository_url, tmp_path):
    a = open_storage(repository_url + "/a", tmp_path)
    b = open_storage(repository_url + "/b", tmp_path)
    a.put_bytes("repository.json", b"a")
    b.put_bytes("repository.json", b"b")
    assert a.get_bytes("repository.json") == b"a"
    assert list(a.list("")) == ["repository.json"]
    root = open_storage(repository_url, tmp_path)
    assert sorted(root.list("")) == ["a/repository.json", "b/repository.json"]
    assert not root.exists("repository.json")


def producing(*pieces: bytes, then: BaseException | None = None):
    """A `produce` for put_stream: writes the pieces, half through the buffered file and half
    straight to its descriptor (as write_tarball does for stored weights), then maybe fails."""

    def produce(out) -> None:
        for n, piece in enumerate(pieces):
            if n % 2:
                out.flush()
                os.write(out.fileno(), piece)  # a pipe may take it in several goes: see below
            else:
                out.write(piece)
        if then is not None:
            raise then

    return produce


@pytest.mark.parametrize("size", [0, 1, 1 << 20], ids=["empty", "1-byte", "1-MiB"])
def test_stream_round_trip(storage, size):
    data = os.urandom(size)
    storage.put_stream("checkpoints/s.tar.gz", producing(data[: size // 3], data[size // 3 :]))
    assert storage.get_bytes("checkpoints/s.tar.gz") == data


@pytest.mark.parametrize("tail", [b"tail", b""], ids=["uneven", "whole-chunks"])
def test_large_stream_in_parts(storage, monkeypatch, tail):
    """Past the multipart (S3) / resumable (GCS) threshold, lowered so the test stays small;
    GCS must also end a stream that fills its last chunk exactly."""
    from git_keepsake.storage import gcs, s3

    monkeypatch.setattr(s3, "MULTIPART_THRESHOLD", 6 << 20)
    monkeypatch.setattr(s3, "PART_SIZE", 5 << 20)
    monkeypatch.setattr(gcs, "CHUNK_SIZE", 1 << 20)
    data = os.urandom(12 << 20) + tail
    storage.put_stream("checkpoints/big.tar.gz", producing(*_pieces(data, 3 << 20)))
    assert storage.get_bytes("checkpoints/big.tar.gz") == data


@pytest.mark.parametrize("written", [10, 12 << 20], ids=["small", "in-parts"])
def test_a_failing_stream_stores_nothing(storage, monkeypatch, written):
    """If the source fails, its error comes out (or a StorageError caused by it), it is not
    retried, and no part of the blob is stored: an older blob under the key stays whole."""
    from git_keepsake.storage import gcs, remote, s3

    monkeypatch.setattr(s3, "MULTIPART_THRESHOLD", 6 << 20)
    monkeypatch.setattr(s3, "PART_SIZE", 5 << 20)
    monkeypatch.setattr(gcs, "CHUNK_SIZE", 1 << 20)
    monkeypatch.setattr(remote, "RETRY_DELAYS", ())
    storage.put_bytes("checkpoints/old.tar.gz", b"old")
    calls = []
    failure = FileNotFoundError(2, "No such file or directory", "/staged/weights.bin")

    def produce(out) -> None:
        calls.append(1)
        producing(*_pieces(b"x" * written, 1 << 20), then=failure)(out)

    for key in ("checkpoints/old.tar.gz", "checkpoints/new.tar.gz"):
        with pytest.raises((FileNotFoundError, StorageError)) as raised:
            storage.put_stream(key, produce)
        assert failure in (raised.value, raised.value.__cause__)
    assert len(calls) == 2
    assert storage.get_bytes("checkpoints/old.tar.gz") == b"old"
    assert not storage.exists("checkpoints/new.tar.gz")
    assert sorted(storage.list("")) == ["checkpoints/old.tar.gz"]
    if isinstance(storage, s3.S3Storage):  # no parts left behind, to be billed for
        uploads = storage.client.list_multipart_uploads(Bucket=storage.bucket)
        assert uploads.get("Uploads", []) == []


def _pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_concurrent_writers(storage):
    """Many writers at once: every distinct key lands, and a contested key holds one whole
    write, never a mix of two."""
    values = {n: bytes([n]) * 50_000 for n in range(12)}
    errors = []

    def write(n: int) -> None:
        try:
            storage.put_bytes(f"own/{n}", values[n])
            storage.put_bytes("shared", values[n])
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(n,)) for n in values]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert storage.get_many(f"own/{n}" for n in values) == {
        f"own/{n}": v for n, v in values.items()
    }
    assert storage.get_bytes("shared") in values.values()


def test_delete_many(storage):
    keys = [f"checkpoints/{n}.tar.gz" for n in range(40)]
    for key in keys:
        storage.put_bytes(key, b"x")
    storage.delete_many([*keys[:30], "checkpoints/never.tar.gz"])
    assert sorted(storage.list("checkpoints/")) == sorted(keys[30:])


# --- buckets ---


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_missing_bucket_is_named_on_read_and_created_on_write(scheme, request, tmp_path):
    request.getfixturevalue(f"{'s3' if scheme == 's3' else 'gcs'}_env")
    bucket = new_bucket_name()
    storage = open_storage(f"{scheme}://{bucket}/prefix", tmp_path)
    for read in (
        lambda: storage.get_bytes("repository.json"),
        lambda: list(storage.list("metadata/")),
    ):
        with pytest.raises(BucketNotFound, match=f"bucket '{bucket}' does not exist"):
            read()
    assert not storage.exists("repository.json")  # nothing is there: no error
    storage.put_bytes("repository.json", b'{"version":1}')  # creates the bucket
    assert open_storage(f"{scheme}://{bucket}/prefix", tmp_path).get_bytes("repository.json") == (
        b'{"version":1}'
    )


@pytest.mark.parametrize(
    "url", ["s3://Upper_Case", "s3://ab", "gs://-leading", "s3://bucket!/x", "gs://a"]
)
def test_invalid_bucket_names(url, tmp_path):
    with pytest.raises(ConfigError, match="not a valid bucket name"):
        open_storage(url, tmp_path)


def test_backends_are_imported_lazily():
    """`import git_keepsake` must not pay for boto3 or google-cloud-storage."""
    import subprocess
    import sys

    code = (
        "import sys, git_keepsake, git_keepsake.storage, git_keepsake.cli;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('boto3', 'botocore', 'google', 's3transfer', 'requests')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
