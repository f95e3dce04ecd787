"""List what is inside zip, tar and gzip attachments, in memory, within hard limits.

Nothing is extracted to disk. Member names come from the archive's directory; only a
member's first bytes are decompressed (to see what it really is), and a nested archive
is decompressed whole only when it is within ``max_nested_size`` and ``depth``. The
declared uncompressed total, the member count and the per-member compression ratio are
bounded, so a 42.zip-style bomb or a malformed archive ends as a *problem* (which the
policy turns into a symbol), never as an exception or a memory spike.
"""

from __future__ import annotations

import functools
import gzip
import io
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Literal, cast

from spamgate.filters.attachments.detect import ole_has_vba, sniff

__all__ = ["ARCHIVE_KINDS", "ArchiveLimits", "Listing", "Member", "gzip_name", "list_archive"]

ARCHIVE_KINDS = frozenset({"zip", "tar", "gz"})
ProblemKind = Literal["bomb", "malformed", "limit"]

_HEAD = 4096  # bytes decompressed from each member to learn its real type
_RATIO_FLOOR = 1024 * 1024  # ratios of small members say nothing: tiny files compress wildly


@dataclass(frozen=True)
class ArchiveLimits:
    depth: int = 2  # archive levels opened: 1 = the attachment's own members only
    max_members: int = 1000  # over the whole archive tree
    max_nested_size: int = 10 * 1024 * 1024  # bytes decompressed to open one nested archive
    max_total_size: int = 200 * 1024 * 1024  # declared uncompressed bytes over the tree
    max_ratio: float = 250.0  # uncompressed/compressed per member (members over 1 MiB only)


@dataclass(frozen=True)
class Member:
    path: str  # "outer.zip/inner.zip/run.exe": where it is, for replies and logs
    name: str  # its own name inside its archive
    detected: str | None = None  # what its first bytes say it is
    encrypted: bool = False


@dataclass
class Listing:
    members: list[Member] = field(default_factory=list)
    problems: list[tuple[ProblemKind, str]] = field(default_factory=list)
    macros: list[str] = field(default_factory=list)  # paths of Office files carrying VBA
    _declared: int = 0
    _stopped: bool = False

    def problem(self, kind: ProblemKind, detail: str, stop: bool = False) -> None:
        self.problems.append((kind, detail))
        self._stopped = self._stopped or stop

    def count(self, size: int, path: str, limits: ArchiveLimits) -> bool:
        """Account one member; False (and a problem) once a tree-wide limit is passed."""
        if len(self.members) >= limits.max_members:
            self.problem("limit", f"{path}: more than {limits.max_members} archive members", stop=True)
            return False
        self._declared += max(size, 0)
        if self._declared > limits.max_total_size:
            self.problem("bomb", f"{path}: over {limits.max_total_size} bytes uncompressed", stop=True)
            return False
        return True


def list_archive(data: bytes, kind: str, label: str, limits: ArchiveLimits) -> Listing:
    listing = Listing()
    _open(data, kind, label, 1, limits, listing)
    return listing


def _open(data: bytes, kind: str, label: str, depth: int, limits: ArchiveLimits, out: Listing) -> None:
    try:
        if kind == "zip":
            _zip(data, label, depth, limits, out)
        elif kind == "tar":
            _tar(data, label, depth, limits, out)
        elif kind == "gz":
            _gz(data, label, depth, limits, out)
    # Archive libraries raise a zoo of exceptions on hostile input (BadZipFile, zlib.error,
    # EOFError, struct.error, NotImplementedError, ...): every one means "malformed".
    except Exception as exc:
        out.problem("malformed", f"{label}: {type(exc).__name__}: {exc}"[:200])


def _inspect(path: str, name: str, opener: Callable[[], IO[bytes]], depth: int, limits: ArchiveLimits,
             out: Listing) -> Member:
    """Read a member's head (and, for a nested archive or OLE file, the member within limits)."""
    try:
        with opener() as f:
            head = f.read(_HEAD)
            kind = sniff(head)
            body = head
            wants_all = (kind in ARCHIVE_KINDS and depth < limits.depth) or kind == "ole"
            if wants_all:
                body = head + f.read(limits.max_nested_size + 1 - len(head))
    except Exception as exc:
        out.problem("malformed", f"{path}: {type(exc).__name__}: {exc}"[:200])
        return Member(path, name)
    if wants_all and len(body) > limits.max_nested_size:
        out.problem("limit", f"{path}: nested {kind} over {limits.max_nested_size} bytes not opened")
    elif kind == "ole" and ole_has_vba(body):
        out.macros.append(path)
    elif kind in ARCHIVE_KINDS and depth < limits.depth:
        _open(body, kind, path, depth + 1, limits, out)
    return Member(path, name, kind)


def _zip(data: bytes, label: str, depth: int, limits: ArchiveLimits, out: Listing) -> None:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            if out._stopped:
                return
            path = f"{label}/{info.filename}"
            if not out.count(info.file_size, path, limits):
                return
            if info.filename.rsplit("/", 1)[-1].lower() == "vbaproject.bin":
                out.macros.append(label)
            encrypted = bool(info.flag_bits & 0x1)
            if info.is_dir() or encrypted:
                out.members.append(Member(path, info.filename, None, encrypted))
                continue
            if info.file_size > _RATIO_FLOOR and info.file_size > limits.max_ratio * max(info.compress_size, 1):
                ratio = info.file_size / max(info.compress_size, 1)
                out.problem("bomb", f"{path}: compression ratio {ratio:.0f} > {limits.max_ratio:g}")
                out.members.append(Member(path, info.filename))
                continue
            member = _inspect(path, info.filename, functools.partial(zf.open, info), depth, limits, out)
            out.members.append(member)


def _tar(data: bytes, label: str, depth: int, limits: ArchiveLimits, out: Listing) -> None:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
        for ti in _tar_members(tf):
            if out._stopped:
                return
            path = f"{label}/{ti.name}"
            if not out.count(ti.size, path, limits):
                return
            if not ti.isfile():
                out.members.append(Member(path, ti.name))
                continue
            out.members.append(_inspect(path, ti.name, functools.partial(_extract, tf, ti), depth, limits, out))


def _tar_members(tf: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    # Iterate lazily: tf.getmembers() would read the whole (maybe huge) stream first.
    while (ti := tf.next()) is not None:
        yield ti


def _extract(tf: tarfile.TarFile, ti: tarfile.TarInfo) -> IO[bytes]:
    f = tf.extractfile(ti)
    return f if f is not None else io.BytesIO()


def _gunzip(data: bytes) -> IO[bytes]:
    return cast(IO[bytes], gzip.GzipFile(fileobj=io.BytesIO(data)))


def gzip_name(data: bytes) -> str | None:
    """The original file name a gzip header may carry (FNAME, RFC 1952), without decompressing."""
    if len(data) < 10 or not data.startswith(b"\x1f\x8b") or not data[3] & 0x08:
        return None
    pos = 10
    if data[3] & 0x04:  # FEXTRA comes first
        if len(data) < 12:
            return None
        pos += 2 + int.from_bytes(data[10:12], "little")
    end = data.find(b"\0", pos, pos + 1024)
    return data[pos:end].decode("latin-1") if end > pos else None


def _gz(data: bytes, label: str, depth: int, limits: ArchiveLimits, out: Listing) -> None:
    head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, 512)
    if head[257:262] == b"ustar":
        _tar(data, label, depth, limits, out)  # tarfile reads the gzip stream itself, lazily
        return
    inner = gzip_name(data) or (label.rsplit("/", 1)[-1].removesuffix(".gz").removesuffix(".GZ"))
    path = f"{label}/{inner}"
    if out.count(0, path, limits):
        out.members.append(_inspect(path, inner, functools.partial(_gunzip, data), depth,
                                    limits, out))
