"""Snapshot tarballs: Keepsake compatibility, round trips, and refusing unsafe archives."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import tarfile
import zlib
from pathlib import Path

import pytest

from git_keepsake import tarball
from git_keepsake.tarball import (
    UnsafeTarball,
    iter_files,
    list_members,
    open_member,
    write_tarball,
)

TOP = "ab" * 32  # a full 64-hex ID, like Keepsake's
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "keepsake-0.4.2" / ".keepsake"
TEXT = b"".join(b"def layer_%d(x):\n    return x * %d + 1\n" % (i, i) for i in range(20000))


def make_files(root: Path, contents: dict[str, bytes]) -> list[tuple[str, Path]]:
    files = []
    for rel, data in contents.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files.append((rel, path))
    return files


def snapshot(tmp_path: Path, contents: dict[str, bytes]) -> Path:
    dest = tmp_path / "snapshot.tar.gz"
    write_tarball(dest, TOP, make_files(tmp_path / "src", contents))
    return dest


def raw_tar(path: Path) -> bytes:
    """The uncompressed tar, checking on the way that the file is exactly one gzip member."""
    inflate = zlib.decompressobj(31)
    data = inflate.decompress(path.read_bytes())
    assert inflate.eof and inflate.unused_data == b""
    return data


def extract_tarball(src: Path, out: Path) -> list[str]:
    """Every file, read as checkout reads them, written under `out` with its executable bit
    and mtime; the paths in the tarball's order."""
    written = []
    for rel, member, reader in iter_files(src):
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(reader.read())
        target.chmod(0o755 if member.mode & 0o111 else 0o644)
        os.utime(target, (member.mtime, member.mtime))
        written.append(rel)
    return written


def evil_tarball(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    """A tarball with one good file and then `member`: nothing at all must be extracted."""
    with tarfile.open(path, "w:gz", format=tarfile.GNU_FORMAT) as tar:
        good = tarfile.TarInfo(f"{TOP}/good.txt")
        good.size = 4
        tar.addfile(good, io.BytesIO(b"good"))
        member.size = len(data) if member.isreg() else 0
        tar.addfile(member, io.BytesIO(data) if member.isreg() else None)
    return path


def test_round_trip(tmp_path):
    contents = {
        "train.py": b"print('training')\n",
        "empty.txt": b"",
        "src/deep/nested/model.py": b"LAYERS = [64, 32]\n",
        "weights/model.pth": os.urandom(300_000),
        "run.sh": b"#!/bin/sh\necho hi\n",
    }
    files = make_files(tmp_path / "src", contents)
    (tmp_path / "src" / "run.sh").chmod(0o755)
    os.utime(tmp_path / "src" / "train.py", (1_600_000_000, 1_600_000_000))
    dest = tmp_path / "snapshot.tar.gz"
    write_tarball(dest, TOP, files)

    out = tmp_path / "out"
    assert extract_tarball(dest, out) == list(contents)
    for rel, data in contents.items():
        assert (out / rel).read_bytes() == data
    assert os.access(out / "run.sh", os.X_OK)
    assert not os.access(out / "train.py", os.X_OK)
    assert (out / "train.py").stat().st_mtime == 1_600_000_000
    # Only the extracted files: no temp files left behind.
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(
        contents
    )


def test_members_look_like_keepsakes(tmp_path):
    files = make_files(tmp_path / "src", {"run.sh": b"#!/bin/sh\n", "dir/sub/b.bin": b"b"})
    (tmp_path / "src" / "run.sh").chmod(0o755)
    dest = tmp_path / "s.tar.gz"
    write_tarball(dest, TOP, files)
    with tarfile.open(dest) as tar:
        members = tar.getmembers()
    # Regular files only, no directory entries, owned by root like Keepsake's.
    assert [m.name for m in members] == [f"{TOP}/run.sh", f"{TOP}/dir/sub/b.bin"]
    assert [m.mode for m in members] == [0o755, 0o644]
    for m in members:
        assert (m.type, m.uid, m.gid, m.uname, m.gname) == (tarfile.REGTYPE, 0, 0, "root", "root")
    assert raw_tar(dest)[257:265] == b"ustar\x0000"  # POSIX ustar, as Keepsake writes


def test_single_gzip_member_readable_by_gzip(tmp_path):
    dest = snapshot(tmp_path, {"code.py": TEXT, "weights.bin": os.urandom(500_000)})
    data = raw_tar(dest)
    assert gzip.decompress(dest.read_bytes()) == data
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.extractfile(f"{TOP}/code.py").read() == TEXT


@pytest.mark.skipif(not shutil.which("gzip") or not shutil.which("tar"), reason="no gzip/tar")
def test_gzip_and_tar_tools_accept_mixed_levels(tmp_path):
    contents = {
        "a.py": TEXT,
        "b.bin": os.urandom(1_000_000),
        "c.py": TEXT[:100_000],
        "d.bin": os.urandom(200_000),
        "e.txt": b"small",
    }
    dest = snapshot(tmp_path, contents)
    subprocess.run(["gzip", "-t", str(dest)], check=True)
    listing = subprocess.run(
        ["tar", "tzf", str(dest)], check=True, capture_output=True, text=True
    ).stdout
    assert listing.split() == [f"{TOP}/{rel}" for rel in contents]
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "xzf", str(dest), "-C", str(out), "--strip-components=1"], check=True)
    for rel, data in contents.items():
        assert (out / rel).read_bytes() == data


def test_levels_chosen_per_file(tmp_path, monkeypatch):
    random_part = os.urandom(2_000_000)
    # Small BIG_FILE so the level-1 path is exercised too: 6 -> 0 -> 1 -> 0 -> 6.
    monkeypatch.setattr(tarball, "BIG_FILE", len(TEXT))
    contents = {
        "small.py": TEXT[:50_000],
        "w1.bin": random_part[:1_000_000],
        "big.csv": TEXT,
        "w2.bin": random_part[1_000_000:],
        "z.py": TEXT[:50_000],
    }
    dest = snapshot(tmp_path, contents)
    size = dest.stat().st_size
    text_size = len(TEXT) + 100_000
    assert size < len(random_part) + text_size // 4  # the text got compressed
    assert size < len(random_part) * 1.01 + text_size  # and the random data was not inflated
    assert extract_tarball(dest, tmp_path / "out") == list(contents)
    for rel, data in contents.items():
        assert (tmp_path / "out" / rel).read_bytes() == data


def test_big_half_compressible_files_are_stored(tmp_path, monkeypatch):
    # Like bf16 weights: shrinks to ~0.65 at level 1, but deflating gigabytes of it is too slow.
    data = bytes(b for x in os.urandom(300_000) for b in (x, 0))
    monkeypatch.setattr(tarball, "BIG_FILE", len(data))
    big = snapshot(tmp_path / "big", {"model.bin": data})
    assert big.stat().st_size > len(data)
    monkeypatch.setattr(tarball, "BIG_FILE", len(data) + 1)
    small = snapshot(tmp_path / "small", {"model.bin": data})
    assert small.stat().st_size < len(data) * 0.8


def test_compressible_text_shrinks(tmp_path):
    dest = snapshot(tmp_path, {"model.py": TEXT})
    assert dest.stat().st_size < len(TEXT) / 5


def test_random_data_not_inflated(tmp_path):
    data = os.urandom(4_000_000)
    dest = snapshot(tmp_path, {"model.pth": data})
    assert dest.stat().st_size < len(data) * 1.01
    assert open_member(dest, "model.pth").read() == data


def test_same_input_same_bytes(tmp_path):
    files = make_files(tmp_path / "src", {"a.py": TEXT, "b.bin": os.urandom(100_000)})
    write_tarball(tmp_path / "1.tar.gz", TOP, files)
    write_tarball(tmp_path / "2.tar.gz", TOP, files)
    assert (tmp_path / "1.tar.gz").read_bytes() == (tmp_path / "2.tar.gz").read_bytes()


def test_source_symlinks_are_followed(tmp_path):
    (tmp_path / "real.bin").write_bytes(b"real data")
    (tmp_path / "link.bin").symlink_to(tmp_path / "real.bin")
    dest = tmp_path / "s.tar.gz"
    write_tarball(dest, TOP, [("model.bin", tmp_path / "link.bin")])
    with tarfile.open(dest) as tar:
        [member] = tar.getmembers()
        assert member.isreg()
        assert tar.extractfile(member).read() == b"real data"


def test_long_paths_fall_back_to_pax(tmp_path):
    rel = "d" * 150 + "/" + "f" * 120 + ".txt"
    dest = snapshot(tmp_path, {rel: b"deep", "short.txt": b"s"})
    assert list_members(dest) == [(rel, 4), ("short.txt", 1)]
    assert extract_tarball(dest, tmp_path / "out") == [rel, "short.txt"]
    assert (tmp_path / "out" / rel).read_bytes() == b"deep"


@pytest.mark.parametrize("rel", ["/abs.txt", "../up.txt", "a/../b.txt", "a//b.txt", "./a.txt", ""])
def test_write_refuses_unclean_paths(tmp_path, rel):
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(ValueError):
        write_tarball(tmp_path / "s.tar.gz", TOP, [(rel, tmp_path / "f")])


def test_empty_snapshot(tmp_path):
    dest = tmp_path / "empty.tar.gz"
    write_tarball(dest, TOP, [])
    assert list_members(dest) == []
    assert extract_tarball(dest, tmp_path / "out") == []


def test_list_members(tmp_path):
    dest = snapshot(tmp_path, {"a.txt": b"abc", "d/b.txt": b""})
    assert list_members(dest) == [("a.txt", 3), ("d/b.txt", 0)]


def test_directory_entries_are_skipped(tmp_path):
    dest = tmp_path / "dirs.tar.gz"
    with tarfile.open(dest, "w:gz") as tar:
        for name in (TOP, f"{TOP}/sub"):
            d = tarfile.TarInfo(name)
            d.type = tarfile.DIRTYPE
            tar.addfile(d)
        f = tarfile.TarInfo(f"{TOP}/sub/f.txt")
        f.size = 2
        tar.addfile(f, io.BytesIO(b"hi"))
    assert extract_tarball(dest, tmp_path / "out") == ["sub/f.txt"]
    assert (tmp_path / "out" / "sub" / "f.txt").read_bytes() == b"hi"
    assert list_members(dest) == [("sub/f.txt", 2)]


def test_open_member_streams(tmp_path):
    data = os.urandom(3_000_000)
    dest = snapshot(tmp_path, {"a.txt": b"a", "w/model.pth": data})
    with open_member(dest, "w/model.pth") as f:
        chunks = iter(lambda: f.read(65536), b"")
        assert b"".join(chunks) == data
        f.seek(1000)  # torch.load needs a seekable file
        assert f.read(10) == data[1000:1010]
    assert f.closed


def test_open_member_close_can_be_wrapped(tmp_path):
    # Checkpoint.open replaces close() to also delete a downloaded tarball.
    dest = snapshot(tmp_path, {"model.pth": b"w"})
    f = open_member(dest, "model.pth")
    closed = []
    close = f.close
    f.close = lambda: (close(), closed.append(True))
    with f:
        assert f.read() == b"w"
    assert closed and f.closed


def test_open_member_missing(tmp_path):
    dest = snapshot(tmp_path, {"a.txt": b"a", "w/model.pth": b"w"})
    with pytest.raises(FileNotFoundError) as e:
        open_member(dest, "model.pth")
    assert "model.pth" in str(e.value) and "w/model.pth" in str(e.value)


def unsafe_members():
    def member(name, kind=tarfile.REGTYPE, linkname=""):
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = linkname
        return info

    return {
        "dotdot": member(f"{TOP}/../evil.txt"),
        "nested dotdot": member(f"{TOP}/a/../../evil.txt"),
        "absolute": member(f"{TOP}//tmp/evil.txt"),
        "absolute name": member("/tmp/evil.txt"),
        "symlink": member(f"{TOP}/link", tarfile.SYMTYPE, "/etc/passwd"),
        "hardlink": member(f"{TOP}/hard", tarfile.LNKTYPE, f"{TOP}/good.txt"),
        "char device": member(f"{TOP}/dev", tarfile.CHRTYPE),
        "block device": member(f"{TOP}/blk", tarfile.BLKTYPE),
        "fifo": member(f"{TOP}/fifo", tarfile.FIFOTYPE),
        "no path": member(TOP),
    }


@pytest.mark.parametrize("case", list(unsafe_members()))
def test_unsafe_members_refused_when_reached(tmp_path, case):
    src = evil_tarball(tmp_path / "evil.tar.gz", unsafe_members()[case], b"evil")
    files = iter_files(src)
    assert next(files)[0] == "good.txt"
    with pytest.raises(UnsafeTarball) as e:
        next(files)
    assert e.value.hint


def fixture(kind: str, prefix: str) -> Path:
    matches = sorted((FIXTURES / kind).glob(f"{prefix}*.tar.gz"))
    if not matches:
        pytest.skip(f"no Keepsake 0.4.2 fixture {kind}/{prefix}")
    return matches[0]


def test_reads_keepsake_checkpoint(tmp_path):
    src = fixture("checkpoints", "4ed26497")
    assert list_members(src) == [("model.pth", 9)]
    assert extract_tarball(src, tmp_path) == ["model.pth"]
    assert (tmp_path / "model.pth").read_bytes() == b"weights-2"
    with open_member(src, "model.pth") as f:
        assert f.read() == b"weights-2"


def test_reads_keepsake_experiment(tmp_path):
    src = fixture("experiments", "b60bf65")
    written = extract_tarball(src, tmp_path)
    assert {"train.py", "src/model.py", "data/weights.bin"} <= set(written)
    assert (tmp_path / "train.py").read_bytes() == b"print('training')\n"
    assert (tmp_path / "data" / "weights.bin").read_bytes() == bytes(range(256)) * 4
