"""What a file really is, from its first bytes (pure functions, no I/O).

Only the types a mail policy cares about: executables and scripts' carriers, archives,
Office containers and the common documents and images whose extension a disguised
executable borrows. ``sniff`` returns a short kind name or None (unknown: no opinion).
"""

from __future__ import annotations

import struct

__all__ = ["COMPATIBLE", "OLE_MAGIC", "ole_has_vba", "sniff"]

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"

_PREFIXES: tuple[tuple[bytes, str], ...] = (
    (b"MZ", "exe"),
    (b"\x7fELF", "elf"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),  # an empty zip
    (OLE_MAGIC, "ole"),
    (b"%PDF-", "pdf"),
    (b"\x1f\x8b", "gz"),
    (b"Rar!\x1a\x07", "rar"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"L\x00\x00\x00\x01\x14\x02\x00", "lnk"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
)

# Which name extensions are honest for a detected kind. A kind missing here, or a name
# without an extension, is never called a mismatch.
COMPATIBLE: dict[str, frozenset[str]] = {
    "exe": frozenset({"exe", "dll", "scr", "com", "cpl", "sys", "ocx", "pif", "efi", "drv", "mui", "ax"}),
    "elf": frozenset({"so", "bin", "elf", "o", "run"}),
    "zip": frozenset({
        "zip", "docx", "docm", "dotx", "dotm", "xlsx", "xlsm", "xltx", "xltm", "xlam", "pptx", "pptm",
        "potx", "potm", "ppsx", "ppsm", "ppam", "sldx", "sldm", "odt", "ods", "odp", "odg", "jar", "apk",
        "epub", "xps", "oxps", "vsdx", "kmz", "whl", "nupkg", "appx", "msix", "ipa", "crx", "xpi",
    }),
    "ole": frozenset({"doc", "dot", "xls", "xlt", "xla", "ppt", "pot", "pps", "msi", "msg", "vsd", "pub", "mpp",
                      "msp", "wps", "xlsb", "ole", "bin"}),
    "pdf": frozenset({"pdf", "ai"}),
    "gz": frozenset({"gz", "tgz", "gzip", "svgz", "emz", "wmz"}),
    "rar": frozenset({"rar"}),
    "7z": frozenset({"7z"}),
    "lnk": frozenset({"lnk"}),
    "png": frozenset({"png"}),
    "jpg": frozenset({"jpg", "jpeg", "jpe", "jfif"}),
    "gif": frozenset({"gif"}),
    "tar": frozenset({"tar"}),
    "iso": frozenset({"iso", "img"}),
}


def sniff(data: bytes) -> str | None:
    for prefix, kind in _PREFIXES:
        if data.startswith(prefix):
            return kind
    if data[257:262] == b"ustar":
        return "tar"
    if data[0x8001:0x8006] == b"CD001":  # ISO 9660 primary volume descriptor
        return "iso"
    return None


# Storage/stream names under which Office keeps macros (VBA project, Excel 4 macro sheets).
_VBA_NAMES = frozenset({"VBA", "_VBA_PROJECT", "_VBA_PROJECT_CUR", "Macros"})
_OLE_SCAN_LIMIT = 16 * 1024 * 1024


def ole_has_vba(data: bytes) -> bool:
    """True if an OLE2 compound file has a directory entry named like a VBA project.

    Directory entries are 128-byte records aligned on 128 bytes in the file (sectors are
    512 or 4096 bytes): a UTF-16LE name, its byte length at +64 and the entry type at +66
    (1 storage, 2 stream). Walking every aligned record, instead of following the FAT
    chain, keeps this short and pure; a false hit needs that exact record shape.
    """
    if not data.startswith(OLE_MAGIC):
        return False
    end = min(len(data), _OLE_SCAN_LIMIT) - 128
    for off in range(512, end + 1, 128):
        (name_len,) = struct.unpack_from("<H", data, off + 64)
        if not 2 <= name_len <= 64 or name_len % 2 or data[off + 66] not in (1, 2):
            continue
        try:
            name = data[off : off + name_len - 2].decode("utf-16-le")
        except UnicodeDecodeError:
            continue
        if name in _VBA_NAMES:
            return True
    return False
