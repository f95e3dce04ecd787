"""Crafted messages and archives for the attachment tests (unit and through real SMTP)."""

from __future__ import annotations

import base64
import gzip
import io
import struct
import tarfile
import zipfile

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EXE = b"MZ\x90\x00\x03\x00\x00\x00" + b"\x00" * 120 + b"This program cannot be run in DOS mode."
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def message(*parts: tuple[str, bytes, str], subject: str = "files", extra_headers: str = "") -> bytes:
    """A multipart/mixed message; each part is (Content-Type header value + params, data, disposition)."""
    out = [
        "From: sender@example.org", "To: alice@example.edu", f"Subject: {subject}",
        "MIME-Version: 1.0", 'Content-Type: multipart/mixed; boundary="BOUND"',
        *[h for h in extra_headers.splitlines() if h],
        "", "--BOUND", "Content-Type: text/plain", "", "see attached",
    ]  # fmt: skip
    for ctype, data, disposition in parts:
        out += ["--BOUND", f"Content-Type: {ctype}", "Content-Transfer-Encoding: base64"]
        if disposition:
            out.append(f"Content-Disposition: {disposition}")
        out += ["", *base64.encodebytes(data).decode().splitlines()]
    out += ["--BOUND--", ""]
    return "\r\n".join(out).encode()


def attachment(name: str, data: bytes, ctype: str = "application/octet-stream") -> tuple[str, bytes, str]:
    return (f'{ctype}; name="{name}"', data, f'attachment; filename="{name}"')


def zip_of(members: dict[str, bytes], *, encrypted: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    raw = buf.getvalue()
    for name in encrypted:  # zipfile can't encrypt: set the "encrypted" flag bit in both headers
        raw = _flag_encrypted(raw, name.encode())
    return raw


def _flag_encrypted(raw: bytes, name: bytes) -> bytes:
    b = bytearray(raw)
    for sig, flag_off, name_len_off, name_off in ((b"PK\x03\x04", 6, 26, 30), (b"PK\x01\x02", 8, 28, 46)):
        pos = 0
        while (pos := b.find(sig, pos)) >= 0:
            (nlen,) = struct.unpack_from("<H", b, pos + name_len_off)
            if bytes(b[pos + name_off : pos + name_off + nlen]) == name:
                (flags,) = struct.unpack_from("<H", b, pos + flag_off)
                struct.pack_into("<H", b, pos + flag_off, flags | 1)
            pos += 4
    return bytes(b)


def tar_gz_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def gz_of(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename=name, mode="wb", fileobj=buf, mtime=0) as g:
        g.write(data)
    return buf.getvalue()


def ole_with(stream_names: tuple[str, ...]) -> bytes:
    """A minimal OLE2 compound file: header sector plus one directory sector naming the entries."""
    header = bytearray(512)
    header[:8] = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
    struct.pack_into("<HH", header, 0x1A, 0x3E, 3)  # minor/major version, 512-byte sectors
    entries = bytearray()
    for i, name in enumerate(("Root Entry", *stream_names)):
        e = bytearray(128)
        enc = name.encode("utf-16-le") + b"\0\0"
        e[: len(enc)] = enc
        struct.pack_into("<H", e, 64, len(enc))
        e[66] = 5 if i == 0 else 1  # root, then storages
        entries += e
    entries += bytes(-len(entries) % 512)
    return bytes(header) + bytes(entries)


def zip_bomb(levels: int = 2, fanout: int = 8, leaf_size: int = 8 * 1024 * 1024) -> bytes:
    """A 42.zip-style nest: each level holds ``fanout`` copies of the level below; leaves are zeros."""
    zeros = bytes(leaf_size)
    data = zip_of({f"{i}.bin": zeros for i in range(fanout)})
    for level in range(levels - 1):
        data = zip_of({f"lib{level}_{i}.zip": data for i in range(fanout)})
    return data


def malformed_zip() -> bytes:
    good = zip_of({"a.txt": b"hello" * 100, "b.txt": b"world" * 100})
    # Keep the local header, destroy the central directory's offsets.
    cut = good.find(b"PK\x01\x02")
    return good[:cut] + b"PK\x01\x02" + b"\xff" * 60 + good[good.find(b"PK\x05\x06") :]
