"""The attachment policy: every rule fires on a crafted message and stays quiet on clean ones."""

from __future__ import annotations

import base64
import tracemalloc

import pytest

from spamgate.filters.attachments import AttachmentsFilter
from spamgate.filters.attachments.archives import ArchiveLimits, gzip_name, list_archive
from spamgate.filters.attachments.detect import ole_has_vba, sniff
from spamgate.filters.attachments.mime import MimeLimits
from spamgate.filters.attachments.rules import Policy, extensions, inspect_message
from spamgate.filters.sdk.api import Decision, FilterEnv, OptionError, Phase
from spamgate.filters.sdk.testing import make_context
from tests.filters.attachment_samples import (
    EXE,
    PDF,
    attachment,
    gz_of,
    malformed_zip,
    message,
    ole_with,
    tar_gz_of,
    zip_bomb,
    zip_of,
)

POLICY = Policy()


def symbols(raw: bytes, policy: Policy = POLICY) -> dict[str, str]:
    return {f.symbol: f"{f.file}: {f.detail}" for f in inspect_message(raw, policy)}


def test_clean_messages_fire_nothing() -> None:
    docx = zip_of({"[Content_Types].xml": b"<Types/>", "word/document.xml": b"<w:document/>"})
    raw = message(
        attachment("report.pdf", PDF, "application/pdf"),
        attachment("letter.docx", docx),
        attachment("photos.zip", zip_of({"a.txt": b"hello", "b/c.csv": b"1,2,3"})),
        attachment("logs.tar.gz", tar_gz_of({"app.log": b"line\n" * 100})),
        attachment("data.csv.gz", gz_of("data.csv", b"1,2\n" * 100)),
    )
    assert symbols(raw) == {}


@pytest.mark.parametrize("name", ["setup.exe", "SCRIPT.JS", "run.bat.", "x.vbs ", "disk.iso", "a.ps1"])
def test_blocked_extension(name: str) -> None:
    found = inspect_message(message(attachment(name, b"data")), POLICY)
    assert [f.symbol for f in found] == ["ATT_BLOCKED"] and found[0].block


def test_double_extension_and_bidi_override() -> None:
    s = symbols(message(attachment("invoice.pdf.exe", EXE)))
    assert set(s) == {"ATT_BLOCKED", "ATT_DOUBLE_EXT"}
    # U+202E makes "invoice\u202efdp.exe" display as "invoiceexe.pdf": still an .exe.
    assert extensions("invoice\u202efdp.exe") == ["exe"]
    assert "ATT_BLOCKED" in symbols(message(attachment("invoice\u202efdp.exe", b"x")))


def test_rfc2231_and_encoded_word_names_are_seen() -> None:
    rfc2231 = ("application/octet-stream", b"data", "attachment; filename*=utf-8''r%C3%A9sum%C3%A9.pdf.exe")
    assert "ATT_BLOCKED" in symbols(message(rfc2231))
    encoded = base64.b64encode(b"payload.scr").decode()
    ew = (f'application/octet-stream; name="=?utf-8?b?{encoded}?="', b"data", "attachment")
    assert "ATT_BLOCKED" in symbols(message(ew))
    # A harmless filename with an evil Content-Type name: both are checked.
    both = ('application/octet-stream; name="a.exe"', b"data", 'attachment; filename="a.txt"')
    assert "ATT_BLOCKED" in symbols(message(both))


def test_exe_renamed_pdf_is_blocked_by_its_content() -> None:
    s = symbols(message(attachment("invoice.pdf", EXE, "application/pdf")))
    assert set(s) == {"ATT_BLOCKED"} and "content is exe" in s["ATT_BLOCKED"]
    assert sniff(EXE) == "exe" and sniff(PDF) == "pdf"


def test_declared_versus_detected_type_mismatch() -> None:
    s = symbols(message(attachment("scan.pdf", zip_of({"a.txt": b"x"}))))
    assert set(s) == {"ATT_TYPE_MISMATCH"}
    assert symbols(message(attachment("scan.jpg", PDF))).keys() == {"ATT_TYPE_MISMATCH"}


def test_archive_members_listed_including_nested_tar_and_gz() -> None:
    inner = zip_of({"deep/run.exe": EXE})
    assert "ATT_BLOCKED" in symbols(message(attachment("docs.zip", zip_of({"readme.txt": b"x", "inner.zip": inner}))))
    assert "ATT_BLOCKED" in symbols(message(attachment("a.tar.gz", tar_gz_of({"bin/tool.scr": b"x"}))))
    s = symbols(message(attachment("a.gz", gz_of("payload.js", b"alert(1)"))))
    assert "payload.js" in s["ATT_BLOCKED"]
    assert gzip_name(gz_of("payload.js", b"x")) == "payload.js"


def test_nesting_beyond_archive_depth_is_not_opened() -> None:
    nested = zip_of({"l2.zip": zip_of({"l3.zip": zip_of({"evil.exe": EXE})})})
    deep = Policy(archive=ArchiveLimits(depth=3))
    assert "ATT_BLOCKED" in symbols(message(attachment("x.zip", nested)), deep)
    assert "ATT_BLOCKED" not in symbols(message(attachment("x.zip", nested)))


def test_exe_renamed_inside_archive_is_blocked_by_content() -> None:
    s = symbols(message(attachment("x.zip", zip_of({"photo.jpg": EXE}))))
    assert "ATT_BLOCKED" in s and "content is exe" in s["ATT_BLOCKED"]


def test_encrypted_zip_member() -> None:
    z = zip_of({"invoice.doc": b"x" * 100, "note.txt": b"hi"}, encrypted=("invoice.doc",))
    s = symbols(message(attachment("invoice.zip", z)))
    assert set(s) == {"ATT_ENCRYPTED_ARCHIVE"} and "invoice.doc" in s["ATT_ENCRYPTED_ARCHIVE"]


def test_macros_by_extension_by_ooxml_part_and_by_ole_vba_stream() -> None:
    assert "ATT_MACRO" in symbols(message(attachment("budget.xlsm", zip_of({"xl/workbook.xml": b"x"}))))
    ooxml = zip_of({"word/document.xml": b"x", "word/vbaProject.bin": ole_with(("VBA",))})
    assert "ATT_MACRO" in symbols(message(attachment("letter.docx", ooxml)))
    doc = ole_with(("Macros", "VBA", "_VBA_PROJECT"))
    assert ole_has_vba(doc) and not ole_has_vba(ole_with(("WordDocument", "1Table")))
    assert "ATT_MACRO" in symbols(message(attachment("old.doc", doc)))
    assert symbols(message(attachment("plain.doc", ole_with(("WordDocument",))))) == {}


def test_zip_bomb_is_a_symbol_and_memory_stays_bounded() -> None:
    bomb = zip_bomb(levels=2, fanout=8, leaf_size=8 * 1024 * 1024)  # 512 MiB declared
    raw = message(attachment("42.zip", bomb))
    tracemalloc.start()
    try:
        s = symbols(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "ATT_ARCHIVE_BOMB" in s
    assert peak < 32 * 1024 * 1024, peak  # nothing near the 512 MiB the bomb declares


def test_declared_total_and_member_count_limits() -> None:
    many = zip_of({f"f{i}.txt": b"x" for i in range(50)})
    listing = list_archive(many, "zip", "many.zip", ArchiveLimits(max_members=10))
    assert [k for k, _ in listing.problems] == ["limit"] and len(listing.members) == 10
    big = zip_of({"a.txt": b"a" * 5000, "b.txt": b"b" * 5000})
    listing = list_archive(big, "zip", "big.zip", ArchiveLimits(max_total_size=6000))
    assert [k for k, _ in listing.problems] == ["bomb"]


@pytest.mark.parametrize("data", [malformed_zip(), b"PK\x03\x04" + b"\x00" * 40, b"\x1f\x8b\x08\x00garbage"])
def test_malformed_archives_are_a_symbol_never_an_exception(data: bytes) -> None:
    s = symbols(message(attachment("broken.zip", data)))
    assert "ATT_ARCHIVE_MALFORMED" in s


def test_mime_limits_are_symbols() -> None:
    raw = message(*(attachment(f"f{i}.txt", b"x") for i in range(10)))
    assert "ATT_MIME_LIMIT" in symbols(raw, Policy(mime=MimeLimits(max_parts=4)))
    assert "ATT_MIME_LIMIT" in symbols(raw, Policy(mime=MimeLimits(max_decoded_size=3)))
    nested = b"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n" + (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n"
    ) + b"--a--\r\n"
    assert "ATT_MIME_LIMIT" in symbols(nested, Policy(mime=MimeLimits(max_depth=1)))
    assert symbols(nested) == {}


async def test_filter_rejects_naming_the_file() -> None:
    flt = AttachmentsFilter("attachments", {}, FilterEnv())
    v = await flt.check(Phase.DATA, make_context(message=message(attachment("invoice.pdf.exe", EXE))))
    assert v.decision is Decision.REJECT and v.reply is not None
    want = '554 5.7.1 Message rejected: attachment "invoice.pdf.exe" not allowed (blocked extension .exe)'
    assert str(v.reply) == want


async def test_block_extensions_replaces_the_default_and_score_mode() -> None:
    flt = AttachmentsFilter("attachments", {"block_extensions": ["scr"], "block_action": "score"}, FilterEnv())
    ctx = make_context(message=message(attachment("setup.exe", b"x"), attachment("s.SCR", b"x")))
    v = await flt.check(Phase.DATA, ctx)
    assert v.decision is Decision.CONTINUE
    assert [(s.name, s.score) for s in v.symbols] == [("ATT_BLOCKED", 10.0)] and "s.SCR" in v.symbols[0].detail


@pytest.mark.parametrize(
    ("options", "key"),
    [({"blok_extensions": []}, "blok_extensions"), ({"scores": {"NOPE": 1}}, "scores"),
     ({"block_action": "drop"}, "block_action")],
)
def test_bad_options_name_the_key(options: dict[str, object], key: str) -> None:
    with pytest.raises(OptionError) as exc:
        AttachmentsFilter("attachments", options, FilterEnv())
    assert exc.value.key == key
