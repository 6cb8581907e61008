"""Keepsake snapshot tarballs: writing, and reading back safely, `<id>/<path>` .tar.gz (extracting
them is checkout's, which stages what it reads)."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import posixpath
import queue
import stat
import struct
import tarfile
import threading
import zlib
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from .errors import CorruptRepository, UnsafeTarball

# Bytes per read/CRC/deflate call when writing: big enough that Python's per-call overhead
# vanishes, small enough to stay in CPU cache (4 MiB measured clearly slower).
CHUNK = 256 * 1024
CRC_QUEUE = 32  # chunks (of CHUNK bytes) written but not yet checksummed

# How each file is deflated, from how well a sample of it compresses at level 1. Level 0
# (stored) runs at memory speed; level 1 at 30-400 MiB/s depending on the data; level 6 slower.
TEXT_LEVEL = 6  # gzip's default, for code and other small compressible files
BIG_LEVEL = 1  # for big compressible files (datasets, logs)
BIG_FILE = 16 * 1024 * 1024
SAMPLE = 64 * 1024
SAMPLE_MIN = 64 * 1024  # smaller files get TEXT_LEVEL unsampled: not worth a level switch
INCOMPRESSIBLE = 0.9  # sample ratio above which a file is stored: fp32/fp16 weights, archives
# Big files must compress far better to be worth level 1: bf16 weights sample at ~0.8 but
# deflate at ~30 MiB/s, 5x slower than Keepsake's parallel gzip, to save a fifth of the bytes.
BIG_INCOMPRESSIBLE = 0.5

# The 10-byte gzip header: deflate, no flags, no mtime (so identical input gives identical
# output), no extra flags, OS "unknown" as Python's gzip writes it.
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
STORED_MAX = 0xFFFF  # bytes in one stored deflate block
IOV_MAX = 1024  # buffers per os.writev call (POSIX minimum, Linux limit)
FINAL_BLOCK = b"\x01\x00\x00\xff\xff"  # an empty stored block with BFINAL set

UNSAFE_HINT = "it was not written by Keepsake or git-keepsake; inspect it with `tar tvzf`"


# --- writing ---


class _GzipWriter:
    """One gzip member whose deflate level can change between tar members.

    gzip/tarfile fix the level for the whole stream; writing the container by hand lets
    incompressible weights be stored (near memcpy speed) while code is still compressed.
    """

    def __init__(self, raw: BinaryIO, level: int):
        self._raw = raw
        self._raw.write(GZIP_HEADER)
        self._level = level
        self._deflate = _compressor(level)
        self._crc = _RunningCrc()
        self._size = 0

    def set_level(self, level: int) -> None:
        if level == self._level:
            return
        if self._deflate is not None:
            # A full flush ends the deflate data on a byte boundary with no final block and no
            # references back, so whatever follows can continue the same stream (as pigz does).
            self._raw.write(self._deflate.flush(zlib.Z_FULL_FLUSH))
        self._deflate = _compressor(level)
        self._level = level

    def write(self, data: bytes) -> int:
        self._crc.update(data)
        self._size += len(data)
        if self._deflate is None:
            self._raw.flush()  # what is buffered goes first; then the blocks, straight to the fd
            _write_all(self._raw.fileno(), _stored_blocks(data))
        else:
            self._raw.write(self._deflate.compress(data))
        return len(data)

    def tell(self) -> int:
        return self._size  # TarFile asks once, to learn where the archive starts

    def finish(self) -> None:
        self._raw.write(
            FINAL_BLOCK if self._deflate is None else self._deflate.flush(zlib.Z_FINISH)
        )
        self._raw.write(struct.pack("<II", self._crc.value(), self._size & 0xFFFFFFFF))

    def close(self) -> None:
        self._crc.value()  # stops the thread, also after an error


class _RunningCrc:
    """CRC-32 of a stream, computed on a second core while the caller writes.

    zlib.crc32 and os.writev both release the GIL, so for stored weights the checksum (a
    third of the time) overlaps the writing. Chunks are immutable bytes, so nothing is copied.
    """

    def __init__(self) -> None:
        self._crc = 0
        # Bounded: if checksumming falls behind, the writer waits instead of holding the file.
        self._chunks: queue.Queue = queue.Queue(maxsize=CRC_QUEUE)
        self._thread: threading.Thread | None = None

    def update(self, data: bytes) -> None:
        if self._thread is None:
            if len(data) < CHUNK:  # headers and small files: not worth a thread
                self._crc = zlib.crc32(data, self._crc)
                return
            self._thread = threading.Thread(target=self._run, name="git-keepsake-crc", daemon=True)
            self._thread.start()
        self._chunks.put(data)

    def _run(self) -> None:
        while (data := self._chunks.get()) is not None:
            self._crc = zlib.crc32(data, self._crc)

    def value(self) -> int:
        if self._thread is not None:
            self._chunks.put(None)
            self._thread.join()
            self._thread = None
        return self._crc


def _compressor(level: int):
    """A raw deflate compressor, or None for level 0: see _stored_blocks."""
    return zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS) if level else None


def _stored_blocks(data: bytes) -> list:
    """`data` as non-final stored deflate blocks (RFC 1951 3.2.4): headers and views of `data`,
    never a copy of it, so weights go to disk at memory speed. The stream must be at a byte
    boundary, as after a full flush."""
    view = memoryview(data)
    pieces = []
    for i in range(0, len(view), STORED_MAX):
        block = view[i : i + STORED_MAX]
        pieces += (struct.pack("<BHH", 0, len(block), len(block) ^ 0xFFFF), block)
    return pieces


def _write_all(fd: int, pieces: list) -> None:
    """os.writev until every piece is written (a regular file may take less than asked)."""
    while pieces:
        written = os.writev(fd, pieces[:IOV_MAX])
        while pieces and written >= len(pieces[0]):
            written -= len(pieces[0])
            pieces.pop(0)
        if written:
            pieces[0] = memoryview(pieces[0])[written:]


def _choose_level(f: BinaryIO, size: int) -> int:
    """Deflate level for one file, judged by how well a sample from its middle compresses."""
    if size < SAMPLE_MIN:
        return TEXT_LEVEL
    # The middle, not the start: weight formats open with compressible headers (safetensors'
    # JSON, pickle metadata) that say nothing about the gigabytes after them.
    f.seek((size - SAMPLE) // 2)
    sample = f.read(SAMPLE)
    f.seek(0)
    ratio = len(zlib.compress(sample, 1)) / len(sample)
    if size < BIG_FILE:
        return TEXT_LEVEL if ratio <= INCOMPRESSIBLE else 0
    return BIG_LEVEL if ratio <= BIG_INCOMPRESSIBLE else 0


def _check_relpath(relpath: str) -> None:
    parts = relpath.split("/")
    if posixpath.isabs(relpath) or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"not a clean project-relative posix path: {relpath!r}")


def _tar_format(names: list[str]) -> int:
    """ustar like Keepsake, unless a path is too long for it: then PAX, which Go also reads."""
    for name in names:
        try:
            tarfile.TarInfo(name).tobuf(tarfile.USTAR_FORMAT)
        except ValueError:
            return tarfile.PAX_FORMAT
    return tarfile.USTAR_FORMAT


def write_tarball(
    dest: str | os.PathLike | BinaryIO,
    top: str,
    files: Iterable[tuple[str, str | os.PathLike]],
) -> None:
    """Write a .tar.gz whose members are f"{top}/{relpath}", read from the given paths.

    `relpath` is a project-relative posix path. Source symlinks are followed. `dest` is a path,
    written directly (the caller handles temp names and renames), or a binary file open for
    writing that has a real file descriptor, such as a pipe to an upload; it is left open.
    """
    if not top or "/" in top:
        raise ValueError(f"bad top-level folder name: {top!r}")
    files = list(files)
    for relpath, _ in files:
        _check_relpath(relpath)
    tar_format = _tar_format([f"{top}/{relpath}" for relpath, _ in files])

    with _opened(dest) as raw:
        gz = _GzipWriter(raw, TEXT_LEVEL)
        try:
            with tarfile.TarFile(fileobj=gz, mode="w", format=tar_format, copybufsize=CHUNK) as tar:
                for relpath, source in files:
                    _add_file(tar, gz, f"{top}/{relpath}", source)
                gz.set_level(TEXT_LEVEL)  # the end-of-archive padding is up to 10 KiB of zeros
            gz.finish()
        finally:
            gz.close()


def _opened(dest: str | os.PathLike | BinaryIO):
    if isinstance(dest, (str, os.PathLike)):
        return open(dest, "wb")
    return contextlib.nullcontext(dest)


def _add_file(tar: tarfile.TarFile, gz: _GzipWriter, name: str, source: str | os.PathLike) -> None:
    with open(source, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"not a regular file: {os.fspath(source)!r}")
        info = tarfile.TarInfo(name)
        info.size = st.st_size
        info.mode = 0o755 if st.st_mode & 0o111 else 0o644
        # Whole seconds: a float would make tarfile add a PAX header for the fraction.
        info.mtime = min(max(int(st.st_mtime), 0), 8**11 - 1)
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        gz.set_level(_choose_level(f, st.st_size))
        tar.addfile(info, f)


# --- reading ---


def _strip_top(name: str) -> str:
    return name.partition("/")[2]


def _normalize(relpath: str) -> str:
    return posixpath.normpath(relpath.replace(os.sep, "/")).strip("/")


def _is_absolute(path: str) -> bool:
    # A drive ("C:x") counts too: os.path.join would let it escape the target on Windows.
    return posixpath.isabs(path) or os.path.isabs(path) or bool(os.path.splitdrive(path)[0])


def _check_member(src: str | os.PathLike, member: tarfile.TarInfo) -> str:
    """The member's normalized relative path, or UnsafeTarball if it must not be extracted."""
    rel = _strip_top(member.name)
    if member.issym() or member.islnk():
        reason = f"is a link (to {member.linkname!r})"
    elif not member.isreg():
        reason = "is not a regular file (device, fifo or unknown type)"
    elif not rel or _normalize(rel) == ".":
        reason = "has no path below the top-level folder"
    elif _is_absolute(member.name) or _is_absolute(rel):
        reason = "has an absolute path"
    elif ".." in rel.replace("\\", "/").split("/"):
        reason = "has '..' in its path"
    else:
        return _normalize(rel)
    raise UnsafeTarball(f"{os.fspath(src)}: member {member.name!r} {reason}", UNSAFE_HINT)


def _not_found(src: str | os.PathLike, relpath: str, available: list[str]) -> FileNotFoundError:
    shown = ", ".join(available[:5]) + (
        f", ... ({len(available)} files)" if len(available) > 5 else ""
    )
    return FileNotFoundError(
        f"{relpath!r} is not in {os.fspath(src)}; it has: {shown or 'no files'}"
    )


def iter_files(
    src: str | os.PathLike, fileobj: BinaryIO | None = None
) -> Iterator[tuple[str, tarfile.TarInfo, BinaryIO]]:
    """(normalized relative path, member, reader) of each file, in one sequential pass.

    Each member is judged (UnsafeTarball at the first link, device, `..` or absolute path),
    but only when it is reached: a caller must write what it reads somewhere it can throw
    away (a staging folder) until the pass is over. Directory entries are skipped. `fileobj`
    gives the raw .tar.gz bytes instead of opening `src` (to count progress, say); `src` still
    names the tarball in errors. A reader is valid until the next item is asked for. A damaged
    tarball raises CorruptRepository, from the iteration or from a reader.
    """
    with _readable(src), tarfile.open(src, "r|gz", fileobj=fileobj) as tar:
        for member in tar:
            if member.isdir():
                continue
            rel = _check_member(src, member)
            yield rel, member, _Checked(src, tar.extractfile(member))


def list_members(src: str | os.PathLike) -> list[tuple[str, int]]:
    """(relative path without the top-level folder, size) of each regular file member."""
    with _readable(src), tarfile.open(src, "r|gz") as tar:
        return [(_normalize(_strip_top(m.name)), m.size) for m in tar if m.isreg()]


# What a damaged .tar.gz raises, from tarfile, gzip (BadGzipFile is an OSError) and zlib.
DAMAGED = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


@contextlib.contextmanager
def _readable(src: str | os.PathLike):
    try:
        yield
    except DAMAGED as e:
        raise damaged(src, e) from e


def damaged(src: str | os.PathLike, e: BaseException) -> CorruptRepository:
    return CorruptRepository(
        f"{os.fspath(src)} is not a readable .tar.gz: {e}",
        "it was cut short or overwritten after it was written; `gzip -t` tells more",
    )


class _Checked(io.RawIOBase):
    """A member's reader whose damage is a CorruptRepository, not tarfile's or zlib's error."""

    def __init__(self, src: str | os.PathLike, reader: BinaryIO, owner=None):
        self._src = src
        self._reader = reader
        self._owner = owner  # closed with this reader

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._reader.seekable()

    def readinto(self, buffer) -> int:
        with _readable(self._src):
            return self._reader.readinto(buffer)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        with _readable(self._src):
            return self._reader.seek(offset, whence)

    def tell(self) -> int:
        return self._reader.tell()

    def close(self) -> None:
        try:
            super().close()
            self._reader.close()
        finally:
            if self._owner is not None:
                self._owner.close()


class _MemberReader(io.BufferedReader):
    """A buffered member reader (a Python class, so that its close can be wrapped)."""


def open_member(src: str | os.PathLike, relpath: str) -> BinaryIO:
    """A streaming, seekable reader for one member (weights can be many GB: never loaded whole).

    Raises FileNotFoundError naming the path and some available members if it is absent, and
    CorruptRepository if the tarball is damaged (also later, from the reader). Closing the
    reader closes the tarball.
    """
    relpath = _normalize(relpath)
    with _readable(src), contextlib.ExitStack() as stack:
        tar = stack.enter_context(tarfile.open(src, "r:gz"))
        available = []
        for member in tar:
            if member.isreg():
                rel = _normalize(_strip_top(member.name))
                if rel == relpath:
                    reader = _MemberReader(_Checked(src, tar.extractfile(member), owner=tar))
                    stack.pop_all()  # the reader owns the tarball from here on
                    return reader
                available.append(rel)
        raise _not_found(src, relpath, available)
