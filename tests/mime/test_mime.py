"""The streaming MIME walk: structure, decoded sizes, samples, and hostile input."""

from __future__ import annotations

import email
import email.policy
import io
import time
import tracemalloc
import zipfile
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from govmilter.mime import LIMIT_DEFECTS, Limits, walk
from govmilter.model import MessageFacts
from support.mimebuild import (
    b64,
    file_chunks,
    leaf,
    message,
    multipart,
    random_bytes,
    text,
)


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def walk_bytes(data: bytes, size: int = 65536, limits: Limits | None = None) -> MessageFacts:
    return walk(chunked(data, size), limits) if limits else walk(chunked(data, size))


def summary(facts: MessageFacts) -> list[tuple[str, str, str, int, bool]]:
    return [(p.path, p.content_type, p.filename, p.decoded_size, p.is_attachment) for p in facts.parts]


def stdlib_message() -> bytes:
    """A message built by the standard library: text, html, two attachments, a forwarded message."""
    msg = EmailMessage()
    msg["From"] = "sender@example.com"
    msg["To"] = "user@bacninh.gov.vn"
    msg["Subject"] = "Bao cao"
    msg.set_content("Kính gửi anh chị,\nxin gửi báo cáo.\n")
    msg.add_alternative("<p>Kính gửi anh chị</p>", subtype="html")
    msg.add_attachment(random_bytes(150_000), maintype="application", subtype="pdf", filename="báo cáo.pdf")
    msg.add_attachment(random_bytes(3_000, seed=2), maintype="image", subtype="png", filename="anh.png")
    inner = EmailMessage()
    inner["Subject"] = "forwarded"
    inner.set_content("inner text")
    inner.add_attachment(random_bytes(5_000, seed=3), maintype="application", subtype="zip", filename="x.zip")
    msg.add_attachment(inner)
    return msg.as_bytes(policy=email.policy.SMTP)


def stdlib_leaves(data: bytes) -> list[tuple[str, str, int]]:
    """What the standard library (which holds everything in memory) finds in the same message."""
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    found = []
    for part in parsed.walk():
        if part.is_multipart() or part.get_content_type() == "message/rfc822":
            continue
        payload = part.get_payload(decode=True) or b""
        found.append((part.get_content_type(), part.get_filename() or "", len(payload)))
    return found


# ---- structure -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 7, 76, 1000, 65536])
def test_same_parts_and_sizes_as_the_standard_library_whatever_the_chunking(size: int) -> None:
    data = stdlib_message()
    facts = walk_bytes(data, size)
    ours = [(p.content_type, p.filename, p.decoded_size) for p in facts.parts]
    # every part, text parts included: the same types, names and decoded sizes, byte for byte
    assert ours == stdlib_leaves(data)
    assert [kind for kind, _, _ in ours].count("text/plain") == 2  # the texts are really compared
    assert facts.defects == ()


def test_paths_depths_and_attachment_sum() -> None:
    facts = walk_bytes(stdlib_message())
    assert summary(facts) == [
        ("1.1", "text/plain", "", summary(facts)[0][3], False),
        ("1.2", "text/html", "", summary(facts)[1][3], False),
        ("2", "application/pdf", "báo cáo.pdf", 150_000, True),
        ("3", "image/png", "anh.png", 3_000, True),
        ("4.1", "text/plain", "", summary(facts)[4][3], True),  # an attached message counts whole
        ("4.2", "application/zip", "x.zip", 5_000, True),
    ]
    assert [p.depth for p in facts.parts] == [2, 2, 1, 1, 3, 3]
    # the files, the forwarded message's own text and its header blocks
    assert facts.attachment_bytes > 158_000 + facts.parts[4].decoded_size + len("Subject: forwarded")


def test_texts_are_decoded_with_their_charset() -> None:
    body = multipart(
        text("Kính gửi", charset="utf-8", encoding="base64"),
        # windows-1258 writes tone marks as combining characters after the letter
        text("Tr\u00e2n tro\u0323ng", charset="windows-1258", encoding="quoted-printable"),
        text("<b>Xin chào</b>", subtype="html", charset="utf-8"),
        subtype="alternative",
    )
    facts = walk_bytes(message(body))
    texts = [(t.content_type, t.text.strip()) for t in facts.texts]
    assert texts == [
        ("text/plain", "Kính gửi"),
        ("text/plain", "Tr\u00e2n tro\u0323ng"),
        ("text/html", "<b>Xin chào</b>"),
    ]
    assert facts.attachment_bytes == 0


def test_text_past_the_memory_bound_is_kept_on_disk_not_dropped() -> None:
    body = multipart(text("a" * 5000), text("b" * 5000), leaf(random_bytes(100), filename="x.bin"))
    facts = walk_bytes(message(body), limits=Limits(text_memory=6000))
    assert [t.text.strip() for t in facts.texts] == ["a" * 5000, "b" * 5000]
    assert [t.length for t in facts.texts] == [len(t.text) for t in facts.texts]
    assert facts.store is not None and facts.store.spilled
    assert "".join(facts.texts[1].pieces(7)) == facts.texts[1].text
    assert facts.attachment_bytes == 100
    facts.close()
    facts.close()  # idempotent


def test_inline_image_without_name_counts_and_text_does_not() -> None:
    body = multipart(
        text("hello"),
        leaf(random_bytes(1234), "image/jpeg", disposition="inline"),
        leaf(b"name only\r\n", "text/plain", filename="notes.txt", encoding="7bit", disposition=""),
        subtype="related",
    )
    facts = walk_bytes(message(body))
    assert [(p.content_type, p.is_attachment) for p in facts.parts] == [
        ("text/plain", False),
        ("image/jpeg", True),
        ("text/plain", True),
    ]
    assert facts.attachment_bytes == 1234 + len(b"name only\r\n")


def test_single_part_message_that_is_an_attachment() -> None:
    data = message(leaf(random_bytes(999), "application/pdf", "a.pdf"))
    facts = walk_bytes(data)
    assert summary(facts) == [("1", "application/pdf", "a.pdf", 999, True)]


def test_no_mime_headers_is_one_text_part() -> None:
    facts = walk_bytes(b"From: a@b\r\nSubject: plain\r\n\r\nhello\r\nworld\r\n")
    assert summary(facts) == [("1", "text/plain", "", len(b"hello\r\nworld\r\n"), False)]
    assert facts.texts[0].text == "hello\r\nworld\r\n"


def test_boundary_line_break_belongs_to_the_boundary() -> None:
    body = multipart(leaf(b"abc", "application/octet-stream", "a.bin", encoding="binary"))
    assert walk_bytes(message(body)).parts[0].decoded_size == 3


def test_digest_children_default_to_message_rfc822() -> None:
    inner = b"Subject: one\r\n\r\nbody one\r\n"
    body = multipart(b"\r\n" + inner, subtype="digest")
    facts = walk_bytes(message(body))
    assert [(p.path, p.content_type) for p in facts.parts] == [("1.1", "text/plain")]


# ---- file names --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "name"),
    [
        (b'Content-Disposition: attachment; filename="plain.pdf"', "plain.pdf"),
        (b"Content-Disposition: attachment; filename*=utf-8''b%C3%A1o%20c%C3%A1o.pdf", "báo cáo.pdf"),
        (
            b"Content-Disposition: attachment;\r\n filename*0*=utf-8''t%C3%A0i;\r\n filename*1*=%20li%E1%BB%87u;\r\n"
            b' filename*2=".docx"',
            "tài liệu.docx",
        ),
        (b'Content-Disposition: attachment; filename="=?UTF-8?B?aMOzYSDEkcahbi5wZGY=?="', "hóa đơn.pdf"),
        (b"Content-Disposition: attachment; filename*=iso-8859-1'vi'caf%E9.txt", "café.txt"),
        (b'Content-Disposition: attachment; filename="quoted \\"name\\".pdf"', 'quoted "name".pdf'),
    ],
)
def test_file_names(header: bytes, name: str) -> None:
    part = b"Content-Type: application/octet-stream\r\n" + header + b"\r\n\r\nabc"
    facts = walk_bytes(message(multipart(part)))
    assert facts.parts[0].filename == name


def test_name_from_content_type_when_no_disposition() -> None:
    part = b'Content-Type: application/pdf; name="ct.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n' + b64(b"x")
    assert walk_bytes(message(multipart(part))).parts[0].filename == "ct.pdf"


# ---- encodings ---------------------------------------------------------------------------


def test_base64_and_quoted_printable_count_the_same() -> None:
    data = random_bytes(200_000, seed=9)
    for size in (13, 65536):
        one = walk_bytes(message(multipart(leaf(data, filename="a.bin", encoding="base64"))), size)
        two = walk_bytes(message(multipart(leaf(data, filename="a.bin", encoding="quoted-printable"))), size)
        assert one.attachment_bytes == two.attachment_bytes == len(data)
        assert one.parts[0].head == two.parts[0].head == data[:8192]


@pytest.mark.parametrize("line", [4, 60, 76, 1000, 100_000])
def test_base64_any_line_length(line: int) -> None:
    data = random_bytes(50_000)
    part = leaf(b"", filename="a.bin") + b64(data, line)
    assert walk_bytes(message(multipart(part))).attachment_bytes == len(data)


def test_base64_broken_padding_is_tolerated() -> None:
    data = random_bytes(1000)  # 1000 = 3 * 333 + 1: the encoding ends in "=="
    encoded = b64(data).replace(b"==", b"")  # padding dropped
    part = leaf(b"", filename="a.bin") + encoded
    facts = walk_bytes(message(multipart(part)))
    assert facts.attachment_bytes == 1000


def test_base64_concatenated_padded_segments() -> None:
    pieces = [random_bytes(10, seed=s) for s in range(3)]  # each ends in "=="
    encoded = b"".join(b64(p).strip() for p in pieces) + b"\r\n"
    part = leaf(b"", filename="a.bin") + encoded
    facts = walk_bytes(message(multipart(part)))
    assert facts.attachment_bytes == 30
    assert "base64-padding" in facts.defects


def test_unknown_transfer_encoding_counts_raw_bytes() -> None:
    part = leaf(b"x" * 100, filename="a.bin", encoding="x-gzip64")
    facts = walk_bytes(message(multipart(part)))
    assert facts.attachment_bytes == 100
    assert "unknown-transfer-encoding" in facts.defects


def test_uuencoded_blocks_in_text_are_attachments() -> None:
    import binascii

    payload = random_bytes(1000, seed=4)
    lines = [binascii.b2a_uu(payload[i : i + 45]) for i in range(0, len(payload), 45)]
    block = b"begin 644 hoadon.exe\n" + b"".join(lines) + b"`\nend\n"
    body = b"Xem tep:\n" + block + b"Cam on.\n"
    data = message(leaf(body.replace(b"\n", b"\r\n"), "text/plain", encoding="7bit", disposition=""))
    for size in (5, 65536):
        facts = walk_bytes(data, size)
        uu = [p for p in facts.parts if p.transfer_encoding == "x-uuencode"]
        assert [(p.filename, p.decoded_size, p.is_attachment) for p in uu] == [("hoadon.exe", 1000, True)]
        assert uu[0].head == payload
        assert facts.attachment_bytes == 1000


# ---- archives ----------------------------------------------------------------------------


def make_zip(names: list[str], encrypt: bool = False) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            archive.writestr(name, random_bytes(2000, seed=len(name)))
    data = bytearray(buffer.getvalue())
    if encrypt:  # set the encryption flag in every local and central header, as zip -e would
        for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            position = data.find(signature)
            while position >= 0:
                data[position + offset] |= 1
                position = data.find(signature, position + 4)
    return bytes(data)


def test_zip_names_from_the_central_directory() -> None:
    archive = make_zip(["bao cao.docx", "thu muc/hoadon.exe", "tài liệu.pdf"])
    facts = walk_bytes(message(multipart(leaf(archive, "application/zip", "a.zip"))), 333)
    part = facts.parts[0]
    assert part.archive_names == ("bao cao.docx", "thu muc/hoadon.exe", "tài liệu.pdf")
    assert part.archive_encrypted is False


def test_encrypted_zip_is_flagged() -> None:
    archive = make_zip(["secret.pdf"], encrypt=True)
    facts = walk_bytes(message(multipart(leaf(archive, "application/zip", "a.zip"))))
    assert facts.parts[0].archive_encrypted is True


def test_big_zip_directory_is_read_from_the_kept_tail() -> None:
    names = [f"dir/file-{i:04d}.txt" for i in range(300)]
    archive = make_zip(names)
    facts = walk_bytes(message(multipart(leaf(archive, "application/zip", "a.zip"))), 1000)
    assert facts.parts[0].archive_names == tuple(names)


def test_directory_larger_than_the_tail_is_a_defect_not_a_guess() -> None:
    archive = make_zip([f"dir/file-{i:04d}.txt" for i in range(300)])
    facts = walk_bytes(message(multipart(leaf(archive, "application/zip", "a.zip"))), limits=Limits(zip_tail=4096))
    assert facts.parts[0].archive_names == ()
    assert "archive-directory-too-large" in facts.defects


def test_names_of_a_zip_inside_a_forwarded_message() -> None:
    inner = message(multipart(leaf(make_zip(["x.js"]), "application/zip", "in.zip")))
    outer = multipart(text("fwd"), b"Content-Type: message/rfc822\r\n\r\n" + inner)
    facts = walk_bytes(message(outer))
    zipped = [p for p in facts.parts if p.filename == "in.zip"]
    assert zipped[0].archive_names == ("x.js",)
    assert zipped[0].path == "2.1"


# ---- hostile input: defined results, bounded time and memory ------------------------------

# generous: the machine is shared and noisy; these catch quadratic blow-ups, not speed
TIME_BOUND = 20.0
MEMORY_BOUND = 16 * 1024 * 1024


def bounded_walk(path: Path) -> MessageFacts:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        facts = walk(file_chunks(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < TIME_BOUND
    assert peak < MEMORY_BOUND, peak
    return facts


def test_ten_thousand_parts(tmp_path: Path) -> None:
    boundary = b"b"
    path = tmp_path / "parts.eml"
    with path.open("wb") as out:
        out.write(message(b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'))
        for i in range(10_000):
            out.write(b"--" + boundary + b"\r\n" + leaf(b"abcd", "application/pdf", f"f{i}.pdf") + b"\r\n")
        out.write(b"--b--\r\n")
    facts = bounded_walk(path)
    assert "too-many-parts" in facts.defects
    assert len(facts.parts) == 1000  # described up to the limit
    assert facts.attachment_bytes == 40_000  # and every one counted toward the cap


def test_nesting_a_hundred_deep(tmp_path: Path) -> None:
    path = tmp_path / "deep.eml"
    body = leaf(random_bytes(3000), "application/octet-stream", "deep.bin")
    for level in range(100):
        body = multipart(body, boundary=f"level{level}")
    path.write_bytes(message(body))
    facts = bounded_walk(path)
    assert "nesting-too-deep" in facts.defects
    # the part below the limit is counted whole (raw), never less than the file it hides
    assert facts.attachment_bytes >= 3000


def test_five_megabyte_header(tmp_path: Path) -> None:
    # only Content-* fields are kept: 5 MB of another field is counted, read past, and hides nothing
    path = tmp_path / "header.eml"
    folded = b"X-Junk: " + b"\r\n a" * (5 * 1024 * 1024 // 4) + b"\r\n"
    long_line = b"To: " + b"a" * (3 * 1024 * 1024) + b"\r\n"  # one line longer than the limit
    path.write_bytes(folded + long_line + message(multipart(leaf(b"abc", filename="a.bin"))))
    facts = bounded_walk(path)
    assert facts.defects == ()
    assert [(p.filename, p.decoded_size) for p in facts.parts] == [("a.bin", 3)]
    assert facts.attachment_bytes == 3


def test_five_megabyte_content_field(tmp_path: Path) -> None:
    path = tmp_path / "header.eml"
    folded = b"Content-Junk: " + b"\r\n a" * (5 * 1024 * 1024 // 4) + b"\r\n"
    path.write_bytes(folded + message(multipart(leaf(b"abc", filename="a.bin"))))
    facts = bounded_walk(path)
    assert "header-too-large" in facts.defects
    # what follows the limit is counted whole as one file: padding cannot hide attachments
    assert facts.attachment_bytes > 5 * 1024 * 1024 - Limits().max_header
    assert [p.content_type for p in facts.parts] == ["application/octet-stream"]


def test_boundary_that_never_closes(tmp_path: Path) -> None:
    path = tmp_path / "open.eml"
    data = message(multipart(leaf(random_bytes(5000), filename="a.bin")))
    path.write_bytes(data[: data.rindex(b"--=_b")])
    facts = bounded_walk(path)
    assert "unterminated-multipart" in facts.defects
    assert facts.attachment_bytes == 5000


def test_nul_bytes_and_megabyte_lines(tmp_path: Path) -> None:
    path = tmp_path / "lines.eml"
    line = b"\0" * (1024 * 1024)
    body = multipart(
        leaf(line + b"\r\n" + line, "application/octet-stream", "nul.bin", encoding="binary"),
        leaf(b"A" * (1024 * 1024), "text/plain", encoding="7bit", disposition=""),
        leaf(b"-" * (1024 * 1024), "application/octet-stream", "dash.bin", encoding="binary"),
    )
    path.write_bytes(message(body))
    facts = bounded_walk(path)
    assert [p.decoded_size for p in facts.parts] == [2 * len(line) + 2, 1024 * 1024, 1024 * 1024]
    assert facts.defects == ()


def test_boundary_never_found_means_no_parts_but_a_result() -> None:
    data = message(b'Content-Type: multipart/mixed; boundary="nope"\r\n\r\n' + b"x\r\n" * 1000)
    facts = walk_bytes(data)
    assert facts.parts == ()
    assert facts.defects == ("unterminated-multipart",)


def test_limit_defects_are_the_parse_errors() -> None:
    assert {"too-many-parts", "nesting-too-deep", "header-too-large"} == LIMIT_DEFECTS


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.integers(min_value=1, max_value=500))
def test_random_bytes_never_raise(data: bytes, size: int) -> None:
    facts = walk_bytes(data, size)
    assert facts.attachment_bytes >= 0


_FRAGMENTS = [
    b"--b\r\n",
    b"--b--\r\n",
    b"--c\r\n",
    b"\r\n",
    b'Content-Type: multipart/mixed; boundary="c"\r\n',
    b'Content-Type: multipart/mixed; boundary="b"\r\n',
    b"Content-Type: message/rfc822\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    b'Content-Disposition: attachment; filename*0*=utf-8\'\'%E1%BB; filename*1="x.exe"\r\n',
    b"QUJD\r\n",
    b"=3D=\r\n",
    b"begin 644 a.exe\r\n",
    b"#86)C\r\n",
    b"end\r\n",
    b"PK\x05\x06" + b"\0" * 18,
    b"\0\xff",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=60), st.integers(min_value=1, max_value=64))
def test_structured_garbage_is_chunking_independent(pieces: list[bytes], size: int) -> None:
    data = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + b"".join(pieces)
    whole = walk_bytes(data, 1 << 20)
    assert walk_bytes(data, size) == whole


def test_thousands_of_uuencoded_blocks_count_as_parts(tmp_path: Path) -> None:
    path = tmp_path / "uu.eml"
    path.write_bytes(b"Subject: x\r\n\r\n" + b"begin 644 x.exe\r\n!80``\r\nend\r\n" * 1500)
    facts = bounded_walk(path)
    assert "too-many-parts" in facts.defects
    assert len(facts.parts) == 1000
    assert facts.attachment_bytes == 1500  # one byte each, all counted


# ---- real messages: ClamAV's test mails (clamav-testfiles) --------------------------------

TESTFILES = Path("/usr/share/clamav-testfiles")
CLAM_EXE = (TESTFILES / "clam.exe").read_bytes()


@pytest.mark.parametrize("name", ["clam.mail", "clam.exe.mbox.base64", "clam.exe.mbox.uu"])
def test_clamav_test_mails_hold_clam_exe(name: str) -> None:
    facts = walk_bytes((TESTFILES / name).read_bytes(), 100)
    exe = [p for p in facts.parts if p.filename == "clam.exe"]
    assert [(p.decoded_size, p.is_attachment) for p in exe] == [(len(CLAM_EXE), True)]
    assert exe[0].head == CLAM_EXE[: len(exe[0].head)] and exe[0].head.startswith(b"MZ")
    assert facts.attachment_bytes == len(CLAM_EXE)
