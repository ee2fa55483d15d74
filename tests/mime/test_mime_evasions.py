"""Issue 14 in the MIME walk: what counts toward the cap, ambiguous structure, all of the text,
zip bomb facts and the second-pass extractor, on real message bytes."""

from __future__ import annotations

import base64
import binascii
import io
import time
import tracemalloc
import zipfile
from collections.abc import Iterator

import pytest

from govmilter.mime import AMBIGUOUS_DEFECTS, Limits, extract, walk
from govmilter.mime.archives import RATIO_FLOOR
from govmilter.model import MessageFacts, TextPart
from support.mimebuild import TOP, b64, leaf, message, multipart, random_bytes, text
from support.zipbomb import zip_of_zeros

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452") + random_bytes(3000, seed=7)


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def walk_bytes(data: bytes, size: int = 65536, limits: Limits | None = None) -> MessageFacts:
    return walk(chunked(data, size), limits or Limits())


def counted(facts: MessageFacts) -> list[tuple[str, str, int]]:
    return [(p.path, p.content_type, p.decoded_size) for p in facts.parts if p.is_attachment]


# ---- one definition of "attachment" -------------------------------------------------------


def test_nameless_text_that_is_not_plain_or_html_counts() -> None:
    csv = b"ma,ten,so\r\n" + b"1,Nguyen Van A,100\r\n" * 1000
    data = message(multipart(text("xem bang"), leaf(csv, "text/csv", encoding="7bit", disposition="")))
    facts = walk_bytes(data)
    assert counted(facts) == [("2", "text/csv", len(csv))]
    assert facts.attachment_bytes == len(csv)


@pytest.mark.parametrize(
    ("part", "counts"),
    [
        (leaf(b"hello\r\n", "text/plain", encoding="7bit", disposition=""), False),
        (leaf(b"<p>hello</p>\r\n", "text/html", encoding="7bit", disposition="inline"), False),
        (leaf(b"hello\r\n", "text/plain", "ghi-chu.txt", encoding="7bit", disposition="inline"), True),
        (leaf(b"hello\r\n", "text/plain", encoding="7bit", disposition="attachment"), True),
        (leaf(b"BEGIN:VCALENDAR\r\n", "text/calendar", encoding="7bit", disposition=""), True),
    ],
)
def test_only_the_own_body_text_is_free(part: bytes, counts: bool) -> None:
    facts = walk_bytes(message(multipart(part)))
    assert facts.parts[0].is_attachment is counts
    assert (facts.attachment_bytes > 0) is counts


def test_an_attached_message_counts_whole_text_and_headers_included() -> None:
    inner_header = b"From: a@example.com\r\nSubject: chuyen tiep\r\nContent-Type: text/plain; charset=utf-8\r\n"
    inner_body = "Nội dung thư được chuyển tiếp.\r\n".encode() * 1000
    part = b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + inner_header + b"\r\n"
    data = message(multipart(text("fwd"), part + inner_body))
    facts = walk_bytes(data)
    assert counted(facts) == [("2.1", "text/plain", len(inner_body))]
    assert facts.attachment_bytes == len(inner_body) + len(inner_header)
    # its text is still read by the text checks
    assert facts.texts[1].text == inner_body.decode()


def test_an_attached_multipart_message_counts_every_leaf_and_header_block() -> None:
    inner_top = b"Subject: inner\r\nMIME-Version: 1.0\r\n"
    child_one = b"Content-Type: text/plain\r\n"
    child_two = b"Content-Type: text/html\r\n"
    inner = (
        inner_top
        + b'Content-Type: multipart/alternative; boundary="in"\r\n\r\n'
        + b"--in\r\n"
        + child_one
        + b"\r\nplain text\r\n"
        + b"--in\r\n"
        + child_two
        + b"\r\n<p>html</p>\r\n"
        + b"--in--\r\n"
    )
    data = message(multipart(text("xem"), b"Content-Type: message/rfc822\r\n\r\n" + inner))
    facts = walk_bytes(data)
    assert [p.is_attachment for p in facts.parts] == [False, True, True]
    top_block = inner_top + b'Content-Type: multipart/alternative; boundary="in"\r\n'
    expected = len(b"plain text") + len(b"<p>html</p>") + len(top_block) + len(child_one) + len(child_two)
    assert facts.attachment_bytes == expected


def test_a_top_level_message_rfc822_is_the_message_itself() -> None:
    data = TOP + b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nbody\r\n"
    facts = walk_bytes(data)
    assert facts.attachment_bytes == 0 and facts.parts[0].is_attachment is False


# ---- yEnc -----------------------------------------------------------------------------------


def yencode(data: bytes, line: int = 128) -> bytes:
    """The reference yEnc encoder: critical bytes escaped, lines of `line` characters."""
    out = bytearray()
    column = 0
    for byte in data:
        value = (byte + 42) & 255
        if value in (0, 10, 13, 61) or (column == 0 and value in (9, 32, 46)):
            out += bytes((61, (value + 64) & 255))
            column += 2
        else:
            out.append(value)
            column += 1
        if column >= line:
            out += b"\r\n"
            column = 0
    return bytes(out) + (b"\r\n" if column else b"")


def yenc_block(payload: bytes, name: str = "hoadon.exe") -> bytes:
    head = f"=ybegin line=128 size={len(payload)} name={name}\r\n".encode()
    crc = f"{binascii.crc32(payload):08x}"
    return head + yencode(payload) + f"=yend size={len(payload)} crc32={crc}\r\n".encode()


@pytest.mark.parametrize("size", [1, 7, 128, 1000, 65536])
def test_yenc_block_in_text_is_an_attachment_of_its_decoded_size(size: int) -> None:
    payload = bytes(range(256)) * 40 + random_bytes(20_000, seed=3)
    body = b"Xem tep:\r\n" + yenc_block(payload) + b"Cam on.\r\n"
    facts = walk_bytes(message(leaf(body, "text/plain", encoding="7bit", disposition="")), size)
    yenc = [p for p in facts.parts if p.transfer_encoding == "x-yenc"]
    assert [(p.path, p.filename, p.decoded_size, p.is_attachment) for p in yenc] == [
        ("1.yenc1", "hoadon.exe", len(payload), True)
    ]
    assert yenc[0].head == payload[: len(yenc[0].head)] and len(yenc[0].head) == 8192
    assert facts.attachment_bytes == len(payload)
    assert facts.defects == ()


def test_yenc_multipart_header_and_escape_runs() -> None:
    payload = bytes([0x13]) * 500 + bytes([0xD3]) * 501 + random_bytes(3000)  # decode to '=' runs
    encoded = yencode(payload)
    block = (
        b"=ybegin part=1 total=1 line=128 size=%d name=a.bin\r\n=ypart begin=1 end=%d\r\n"
        % (len(payload), len(payload))
        + encoded
        + b"=yend size=%d part=1\r\n" % len(payload)
    )
    for size in (3, 64, 65536):
        facts = walk_bytes(message(leaf(block, "text/plain", encoding="7bit", disposition="")), size)
        part = next(p for p in facts.parts if p.transfer_encoding == "x-yenc")
        assert part.decoded_size == len(payload)
        assert part.head == payload[:8192]


def test_yenc_without_end_counts_to_the_end_of_the_text() -> None:
    payload = random_bytes(5000)
    block = yenc_block(payload).rsplit(b"=yend", 1)[0]
    facts = walk_bytes(message(leaf(block, "text/plain", encoding="7bit", disposition="")))
    assert facts.attachment_bytes == len(payload)
    assert "yenc-unterminated" in facts.defects


def test_yenc_inside_base64_text() -> None:
    payload = random_bytes(4000)
    facts = walk_bytes(message(leaf(yenc_block(payload), "text/plain", encoding="base64", disposition="")))
    assert facts.attachment_bytes == len(payload)


# ---- data: URIs ------------------------------------------------------------------------------


def html_with_image(payload: bytes, scheme: str = "data", wrap: int = 0) -> bytes:
    encoded = base64.b64encode(payload)
    if wrap:
        encoded = b"\r\n".join(encoded[i : i + wrap] for i in range(0, len(encoded), wrap))
    return (
        b"<html><body><p>Kinh gui</p><img alt='x' src=\""
        + scheme.encode()
        + b":image/png;base64,"
        + encoded
        + b'"><p>Tran trong</p></body></html>\r\n'
    )


@pytest.mark.parametrize("size", [1, 5, 333, 65536])
def test_data_uri_in_html_counts_its_decoded_bytes(size: int) -> None:
    html = html_with_image(PNG, wrap=76)
    facts = walk_bytes(
        message(leaf(html, "text/html; charset=utf-8", encoding="quoted-printable", disposition="")), size
    )
    data = [p for p in facts.parts if p.transfer_encoding == "x-data-uri"]
    assert [(p.path, p.content_type, p.decoded_size, p.is_attachment) for p in data] == [
        ("1.data1", "image/png", len(PNG), True)
    ]
    assert data[0].head == PNG[: len(data[0].head)]
    assert facts.attachment_bytes == len(PNG)
    assert GTUBE not in facts.texts[0].text and "Tran trong" in facts.texts[0].text


def test_data_uris_in_any_case_in_plain_text_and_percent_encoded() -> None:
    body = (
        # a payload runs through white space (browsers drop it): it ends at a byte outside base64
        b"anh: <DATA:image/jpeg;BASE64," + base64.b64encode(b"\xff\xd8\xff" + bytes(997)) + b"> het\r\n"
        b"metadata:x/y;base64,QUJD is no URI\r\n"
        b"svg: data:image/svg+xml,%3Csvg%3E%3C/svg%3E\r\n"
    )
    facts = walk_bytes(message(leaf(body, "text/plain", encoding="7bit", disposition="")), 11)
    data = [(p.content_type, p.decoded_size) for p in facts.parts if p.transfer_encoding == "x-data-uri"]
    assert data == [("image/jpeg", 1000), ("image/svg+xml", len(b"<svg></svg>"))]


def test_text_without_markers_makes_no_parts() -> None:
    body = ("Dữ liệu: số 1, ngày 2; =y không phải begin. data, không phải URI.\r\n" * 2000).encode()
    facts = walk_bytes(message(leaf(body, "text/plain; charset=utf-8", encoding="8bit", disposition="")))
    assert len(facts.parts) == 1 and facts.attachment_bytes == 0


# ---- ambiguous structure ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "defect"),
    [
        (b"Content-Type: text/plain\r\nContent-Type: application/x-msdownload\r\n", "duplicate-content-type"),
        (
            b"Content-Type: text/plain\r\nContent-Transfer-Encoding: 7bit\r\nContent-Transfer-Encoding: base64\r\n",
            "duplicate-content-transfer-encoding",
        ),
        (
            b"Content-Type: text/plain\r\nContent-Disposition: inline\r\nContent-Disposition: attachment;"
            b' filename="a.exe"\r\n',
            "duplicate-content-disposition",
        ),
        (
            b'Content-Type: multipart/mixed; boundary="a"\r\nContent-Type: multipart/mixed; boundary="A"\r\n',
            "duplicate-content-type",
        ),
    ],
)
def test_differing_duplicates_are_ambiguous(fields: bytes, defect: str) -> None:
    assert defect in AMBIGUOUS_DEFECTS
    in_part = walk_bytes(message(multipart(fields + b"\r\nTVqQ\r\n")))
    at_top = walk_bytes(TOP + fields + b"\r\nTVqQ\r\n")
    assert defect in in_part.defects and defect in at_top.defects


def test_identical_duplicates_are_not_ambiguous() -> None:
    fields = (
        b"Content-Type: text/plain; charset=UTF-8\r\nContent-Type: TEXT/PLAIN;\r\n charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 7bit\r\nContent-Transfer-Encoding: 7BIT\r\n"
    )
    facts = walk_bytes(TOP + fields + b"\r\nhello\r\n")
    assert not set(facts.defects) & AMBIGUOUS_DEFECTS


@pytest.mark.parametrize(
    "fields",
    [
        b'Content-Type: multipart/mixed; boundary="=_a"; boundary="=_v"\r\n',
        b"Content-Type: text/plain; charset=utf-8; charset=koi8-r\r\n",
        b'Content-Type: application/pdf; name="a.pdf"; name="a.exe"\r\n',
        b'Content-Type: application/pdf\r\nContent-Disposition: attachment; filename="a.pdf"; filename="a.exe"\r\n',
        # an RFC 2231 form beside the plain one, saying something else: readers take either
        b"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"a.pdf\";"
        b" filename*=utf-8''a.exe\r\n",
        b"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename*0=a.; filename*1=pdf;"
        b" filename*1=exe\r\n",
    ],
)
def test_a_parameter_given_twice_with_other_values_is_ambiguous(fields: bytes) -> None:
    assert "duplicate-parameter" in AMBIGUOUS_DEFECTS
    in_part = walk_bytes(message(multipart(fields + b"\r\nTVqQ\r\n")))
    at_top = walk_bytes(TOP + fields + b"\r\nTVqQ\r\n")
    assert "duplicate-parameter" in in_part.defects and "duplicate-parameter" in at_top.defects


def test_the_first_of_two_boundaries_is_read_and_the_message_is_ambiguous() -> None:
    data = (
        TOP + b'Content-Type: multipart/mixed; boundary="=_a"; boundary="=_v"\r\n\r\n'
        b"--=_a\r\nContent-Type: text/plain\r\n\r\na\r\n--=_v\r\n"
        b'Content-Type: application/octet-stream; name="x.exe"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        b"TVqQ\r\n--=_v--\r\n--=_a--\r\n"
    )
    facts = walk_bytes(data)
    assert "duplicate-parameter" in facts.defects
    assert [p.path for p in facts.parts] == ["1"]  # what Python's email and clamd read too


@pytest.mark.parametrize(
    "fields",
    [
        b'Content-Type: multipart/mixed; boundary="=_a"; boundary="=_a"\r\n',
        b"Content-Type: text/plain; charset=utf-8; charset=UTF-8\r\n",
        b"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"a.pdf\";"
        b" filename*=utf-8''a.pdf\r\n",
        b"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename*0=a.; filename*1=pdf;"
        b" filename*1=pdf\r\n",
    ],
)
def test_a_parameter_repeated_with_the_same_value_is_not_ambiguous(fields: bytes) -> None:
    facts = walk_bytes(TOP + fields + b"\r\nx\r\n")
    assert not set(facts.defects) & AMBIGUOUS_DEFECTS


def test_ambiguity_is_recorded_past_max_defects() -> None:
    noisy = [leaf(b"x", f"text/plain; charset=x-nope-{i}", encoding=f"x-enc-{i}") for i in range(5)]
    dup = b"Content-Type: text/plain\r\nContent-Type: application/zip\r\n\r\nx"
    facts = walk_bytes(message(multipart(*noisy, dup)), limits=Limits(max_defects=2))
    assert "duplicate-content-type" in facts.defects


# ---- all of the text, in bounded memory --------------------------------------------------------


def test_a_marking_after_the_first_mebibyte_is_read() -> None:
    filler = "Kính gửi các đồng chí. " * 60_000  # about 1.4 million characters
    body = multipart(text(filler + GTUBE), text("x" * 10 + GTUBE, subtype="html"))
    facts = walk_bytes(message(body), 4096)
    assert facts.store is not None and facts.store.spilled
    assert all(GTUBE in t.text for t in facts.texts)
    # read in pieces, with the stamp possibly cut between two of them
    joined = "".join(facts.texts[0].pieces(1000))
    assert joined.rstrip() == filler + GTUBE and facts.texts[0].length == len(facts.texts[0].text)
    facts.close()


def test_text_part_from_a_string() -> None:
    part = TextPart("text/plain", "abcdef")
    assert (part.text, part.length, list(part.pieces(4))) == ("abcdef", 6, ["abcd", "ef"])
    assert part == TextPart("text/plain", "abcdef") and part != TextPart("text/html", "abcdef")
    assert TextPart("text/plain").text == "" and list(TextPart("text/plain").pieces()) == []


def test_spill_file_goes_to_the_spool_directory_and_is_unlinked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    facts = walk_bytes(message(text("a" * 3000)), limits=Limits(text_memory=1000, spool_dir=str(tmp_path)))
    assert facts.store is not None and facts.store.spilled
    assert list(tmp_path.iterdir()) == []  # unlinked from the start
    assert facts.texts[0].text.startswith("a" * 3000)
    facts.close()
    with pytest.raises(ValueError):
        facts.texts[0].text  # noqa: B018


def peak_of_walk(data: bytes) -> tuple[int, MessageFacts]:
    tracemalloc.start()
    try:
        facts = walk(chunked(data, 65536))
        return tracemalloc.get_traced_memory()[1], facts
    finally:
        tracemalloc.stop()


def test_a_megabyte_of_invalid_utf8_costs_a_bounded_few_megabytes() -> None:
    data = message(leaf(b"\xff" * 1_000_000, "text/plain; charset=utf-8", encoding="8bit", disposition=""))
    peak, facts = peak_of_walk(data)
    assert facts.texts[0].length == 1_000_000 and set(facts.texts[0].text) == {"\ufffd"}
    assert peak < 8 * 1024 * 1024, peak  # 1 MiB characters in memory (2 bytes each) and a chunk
    facts.close()


def test_a_22_megabyte_text_part_is_all_kept_in_bounded_memory() -> None:
    line = "Báo cáo tình hình kinh tế xã hội tháng này.\r\n".encode()
    body = line * (22_000_000 // len(line)) + GTUBE.encode()
    peak, facts = peak_of_walk(message(leaf(body, "text/plain; charset=utf-8", encoding="8bit", disposition="")))
    assert peak < 8 * 1024 * 1024, peak
    part = facts.texts[0]
    assert part.length == len(body.decode())
    tail = ""
    for piece in part.pieces():
        tail = (tail + piece)[-200:]
    assert tail.endswith(GTUBE)
    facts.close()


# ---- zip bombs: sizes from the directory -----------------------------------------------------


def test_expanded_size_and_ratio_of_a_zip_of_zeros() -> None:
    bomb = zip_of_zeros(256 << 20)
    facts = walk_bytes(message(multipart(leaf(bomb, "application/zip", "bang-luong.zip"))))
    part = facts.parts[0]
    assert part.archive_expanded == 256 << 20
    assert part.archive_ratio > 1000
    assert part.archive_unreadable == ""


def test_real_document_ratios_stay_low() -> None:
    buffer = io.BytesIO()
    rows = "".join(
        f'<row r="{i}"><c r="A{i}" t="s"><v>{i % 50}</v></c><c r="B{i}"><v>{i}</v></c></row>' for i in range(1, 150_001)
    )
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/worksheets/sheet1.xml", f"<worksheet><sheetData>{rows}</sheetData></worksheet>")
        archive.writestr("xl/sharedStrings.xml", "<sst>" + "<si><t>Ủy ban nhân dân</t></si>" * 20_000 + "</sst>")
    facts = walk_bytes(message(multipart(leaf(buffer.getvalue(), "application/vnd.ms-excel", "so-lieu.xlsx"))))
    part = facts.parts[0]
    assert 0 < part.archive_ratio < 30  # the sheet; the small, very repetitive strings part is under the floor
    with zipfile.ZipFile(buffer) as archive:
        strings = archive.getinfo("xl/sharedStrings.xml")
    assert strings.compress_size < RATIO_FLOOR and strings.file_size / strings.compress_size > 100


def test_a_directory_that_cannot_be_read_is_flagged_on_the_part() -> None:
    names = [f"thu-muc/tep-{i:05d}.txt" for i in range(300)]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, b"x")
    facts = walk_bytes(
        message(multipart(leaf(buffer.getvalue(), "application/zip", "a.zip"))), limits=Limits(zip_tail=4096)
    )
    assert facts.parts[0].archive_unreadable == "archive-directory-too-large"
    truncated = walk_bytes(
        message(multipart(leaf(buffer.getvalue(), "application/zip", "a.zip"))), limits=Limits(archive_names=10)
    )
    assert truncated.parts[0].archive_unreadable == "archive-names-truncated"


# ---- the second pass: extract() --------------------------------------------------------------


def test_extract_gives_the_decoded_bytes_of_the_parts_asked_for() -> None:
    pdf = b"%PDF-1.4\n" + random_bytes(600_000, seed=11)
    uu_payload = random_bytes(2000, seed=12)
    uu_lines = b"".join(binascii.b2a_uu(uu_payload[i : i + 45]) for i in range(0, len(uu_payload), 45))
    uu_text = (b"xem:\nbegin 644 bang.xls\n" + uu_lines + b"`\nend\n").replace(b"\n", b"\r\n")
    data = message(
        multipart(
            leaf(uu_text, "text/plain", encoding="7bit", disposition=""),
            leaf(pdf, "application/pdf", "bao-cao.pdf"),
            leaf(b"ghi chu\r\n", "text/plain", "ghi-chu.txt", encoding="quoted-printable"),
        )
    )
    facts = walk_bytes(data)
    assert [p.path for p in facts.parts] == ["1.uu1", "1", "2", "3"]
    found = extract(chunked(data, 1000), ["2", "3", "1.uu1", "9"], max_bytes=1_000_000)
    assert set(found) == {"2", "3", "1.uu1"}
    assert (found["2"].file.read(), found["2"].size, found["2"].truncated) == (pdf, len(pdf), False)
    assert found["3"].file.read() == b"ghi chu\r\n"
    assert found["1.uu1"].file.read() == uu_payload
    for item in found.values():
        item.file.close()


def test_extract_decodes_only_the_leaves_asked_for_and_those_holding_them(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A leaf neither asked for nor holding a file asked for is not decoded; the others give their bytes."""
    from govmilter.mime import decoders

    uu_payload = random_bytes(900, seed=21)
    uu_lines = b"".join(binascii.b2a_uu(uu_payload[i : i + 45]) for i in range(0, len(uu_payload), 45))
    uu_text = (b"xem:\nbegin 644 a.xls\n" + uu_lines + b"`\nend\n").replace(b"\n", b"\r\n")
    parts = [random_bytes(50_000, seed=22 + n) for n in range(11)]
    data = message(
        multipart(
            leaf(uu_text, "text/plain", encoding="base64", disposition=""),
            *(leaf(part, "application/pdf", f"p{n}.pdf") for n, part in enumerate(parts, 2)),
        )
    )
    fed: list[int] = []
    feed = decoders.Base64Decoder.feed
    monkeypatch.setattr(decoders.Base64Decoder, "feed", lambda self, piece: fed.append(1) or feed(self, piece))
    found = extract(chunked(data, 4096), ["1.uu1", "12"], max_bytes=1_000_000)
    assert found["1.uu1"].file.read() == uu_payload  # leaf 1 holds it: decoded
    assert found["12"].file.read() == parts[10]  # "12", not "1" nor "2"
    assert set(found) == {"1.uu1", "12"}
    decoded_pieces = len(fed)
    fed.clear()
    everything = extract(chunked(data, 4096), ["1", *(str(n) for n in range(2, 13))], max_bytes=1_000_000)
    assert len(fed) > 5 * decoded_pieces  # the eleven PDFs but one were skipped the first time
    assert [everything[str(n)].file.read() for n in range(2, 13)] == parts
    for item in [*found.values(), *everything.values()]:
        item.file.close()


def test_extract_stops_at_max_bytes_and_spills_to_disk(tmp_path) -> None:  # type: ignore[no-untyped-def]
    payload = random_bytes(1_500_000, seed=13)
    data = message(multipart(leaf(payload, "application/pdf", "lon.pdf")))
    started = time.perf_counter()
    found = extract(chunked(data, 65536), ["1"], max_bytes=1_000_000, spool_dir=str(tmp_path))
    assert time.perf_counter() - started < 10
    item = found["1"]
    assert (item.size, item.truncated) == (1_000_000, True)
    assert item.file.read() == payload[:1_000_000]
    assert getattr(item.file, "_rolled", True)  # past 256 KiB the bytes are on disk
    item.file.close()


def test_b64_helper_roundtrip() -> None:  # the builder the tests above rely on
    assert base64.b64decode(b64(b"abc").replace(b"\r\n", b"")) == b"abc"


def test_zips_stored_in_a_zip_are_judged_by_what_they_expand_to() -> None:
    inner = zip_of_zeros(128 << 20)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for i in range(4):
            archive.writestr(f"phan-{i}.zip", inner)
    facts = walk_bytes(message(multipart(leaf(buffer.getvalue(), "application/zip", "phan.zip"))))
    part = facts.parts[0]
    assert part.archive_expanded == 4 * (128 << 20)
    assert part.archive_ratio > 1000
    assert len(part.archive_names) == 4 and part.archive_unreadable == ""


def test_a_gzip_is_judged_by_its_trailer() -> None:
    import gzip

    bomb = gzip.compress(bytes(256 << 20), compresslevel=1, mtime=0)
    facts = walk_bytes(message(multipart(leaf(bomb, "application/gzip", "nhat-ky.log.gz"))))
    assert facts.parts[0].archive_expanded == 256 << 20 and facts.parts[0].archive_ratio > 100
    small = gzip.compress(b"dong nhat ky\n" * 1000, mtime=0)
    facts = walk_bytes(message(multipart(leaf(small, "application/gzip", "nhat-ky.log.gz"))))
    assert facts.parts[0].archive_expanded == 13000 and facts.parts[0].archive_ratio == 0.0


# ---- what an attached message shows besides its body ---------------------------------------------


def _forward(inner_head: bytes) -> bytes:
    inner = inner_head + b"Content-Type: text/plain; charset=utf-8\r\n\r\nXem.\r\n"
    return message(multipart(text("Chuyen tiep.\n"), b"Content-Type: message/rfc822\r\n\r\n" + inner))


@pytest.mark.parametrize("size", [1, 7, 65536])
def test_an_attached_messages_subject_is_body_text(size: int) -> None:
    word = base64.b64encode("[TỐI MẬT] Kế hoạch".encode()).decode()
    facts = walk_bytes(_forward(f"From: a@x\r\nSubject :\r\n =?UTF-8*vi?B?{word}?=\r\n".encode()), size)
    assert [t.text for t in facts.subjects] == ["[TỐI MẬT] Kế hoạch\n"]
    assert [t.text for t in facts.texts] == ["Chuyen tiep.\r\n", "Xem.\r\n"]


def test_the_messages_own_subject_is_not_body_text() -> None:
    facts = walk_bytes(b"Subject: [TOI MAT]\r\n" + message(text("Xem.\r\n")))
    assert facts.subjects == ()


def test_a_file_name_in_an_encoded_word_with_a_language_tag_is_decoded() -> None:
    word = base64.b64encode("Kế hoạch TỐI MẬT.pdf".encode()).decode()
    body = multipart(text("Xem.\r\n"), leaf(b"%PDF-1.4", "application/pdf", f"=?UTF-8*vi?B?{word}?="))
    facts = walk_bytes(message(body))
    assert [p.filename for p in facts.parts if p.is_attachment] == ["Kế hoạch TỐI MẬT.pdf"]
