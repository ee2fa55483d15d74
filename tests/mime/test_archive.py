"""Zip central directories read from a bounded tail, never extracted."""

from __future__ import annotations

import gzip
import io
import zipfile

import pytest

from govmilter.mime.archives import (
    MAX_NESTING,
    RATIO_FLOOR,
    ZipStream,
    gzip_isize,
    local_header_encrypted,
    looks_like_zip,
    read_directory,
)
from support.zipbomb import zip_of_zeros


def make_zip(names: list[str], comment: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, b"x" * 100)
        archive.comment = comment
    return buffer.getvalue()


def test_names_utf8_and_order() -> None:
    data = make_zip(["a.txt", "thư mục/báo cáo.pdf", "b/c.exe"])
    listing = read_directory(data, len(data), 100)
    assert listing.names == ("a.txt", "thư mục/báo cáo.pdf", "b/c.exe")
    assert (listing.encrypted, listing.problem) == (False, "")


def test_archive_comment_and_prefixed_data() -> None:
    data = b"MZ self-extractor stub" * 100 + make_zip(["a.js"], comment=b"PK\x05\x06 in a comment" * 3)
    assert read_directory(data, len(data), 100).names == ("a.js",)


def test_tail_only() -> None:
    data = make_zip([f"f{i}.txt" for i in range(50)]) + b""
    tail = data[-3000:]
    assert len(read_directory(tail, len(data), 100).names) == 50


def test_directory_beyond_the_tail() -> None:
    data = make_zip([f"f{i}.txt" for i in range(500)])
    assert read_directory(data[-1000:], len(data), 100).problem == "archive-directory-too-large"


def test_name_limit() -> None:
    data = make_zip([f"f{i}.txt" for i in range(20)])
    listing = read_directory(data, len(data), 5)
    assert len(listing.names) == 5 and listing.problem == "archive-names-truncated"


def test_zip64_end_records(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 1)  # force the zip64 end of directory
    data = make_zip(["a.txt", "b.vbs", "c.pdf"])
    assert b"PK\x06\x06" in data
    assert read_directory(data, len(data), 100).names == ("a.txt", "b.vbs", "c.pdf")


@pytest.mark.parametrize("data", [b"", b"PK\x05\x06", b"not a zip at all", b"PK\x05\x06" + b"\xff" * 18])
def test_garbage_is_broken_not_an_exception(data: bytes) -> None:
    assert read_directory(data, len(data), 10).problem in ("archive-broken", "archive-directory-too-large")


def test_local_header_flags() -> None:
    data = bytearray(make_zip(["a.txt"]))
    assert looks_like_zip(bytes(data)) and not local_header_encrypted(bytes(data))
    data[6] |= 1
    assert local_header_encrypted(bytes(data))


def test_expanded_size_and_ratio_from_the_directory() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("small.xml", b"<a/>" * 50_000)  # 200 kB into a few hundred bytes: under the floor
        archive.writestr("zeros.bin", bytes(100 << 20))  # 100 MiB into about 100 kB
        archive.writestr("stored.pdf", b"%PDF" + bytes(1000), compress_type=zipfile.ZIP_STORED)
    data = buffer.getvalue()
    listing = read_directory(data, len(data), 100)
    assert listing.expanded == 200_000 + (100 << 20) + 1004
    with zipfile.ZipFile(buffer) as archive:
        zeros = archive.getinfo("zeros.bin")
    assert zeros.compress_size >= RATIO_FLOOR
    assert listing.ratio == zeros.file_size / zeros.compress_size > 1000
    assert listing.entries == 3 and listing.problem == ""


def test_two_gibibytes_of_zeros() -> None:
    data = zip_of_zeros(2 << 30)
    assert len(data) < 3_000_000
    listing = read_directory(data[-131072:], len(data), 100)
    assert (listing.expanded, listing.names) == (2 << 30, ("bao-cao.txt",))
    assert listing.ratio > 1000


def test_zip64_entry_sizes_come_from_the_extra_field() -> None:
    data = zip_of_zeros(80 << 20, zip64=True)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:  # the standard library reads it the same
        assert archive.getinfo("bao-cao.txt").file_size == 80 << 20
    listing = read_directory(data, len(data), 10)
    assert listing.expanded == 80 << 20 and listing.ratio > 500


# ---- zips inside zips, read from the local headers as the bytes pass -------------------------


def _stream(data: bytes, chunk: int = 4096) -> ZipStream:
    stream = ZipStream()
    for start in range(0, len(data), chunk):
        stream.feed(data[start : start + chunk])
    return stream


def _zip_of(entries: dict[str, bytes], method: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
@pytest.mark.parametrize("chunk", [1, 77, 65536])
def test_zips_stored_or_deflated_in_a_zip_are_read_to_their_own_sizes(method: int, chunk: int) -> None:
    inner = zip_of_zeros(64 << 20)
    outer = _zip_of({f"phan-{i}.zip": inner for i in range(3)}, method)
    listing = read_directory(outer[-65536:], len(outer), 100)
    assert listing.expanded < 1 << 20 and listing.ratio < 2  # the directory sees nothing wrong
    stream = _stream(outer, chunk)
    assert stream.entries == 3
    assert stream.expanded == 3 * (64 << 20)
    assert stream.ratio > 1000


def test_three_levels_deep_are_read_and_no_further() -> None:
    level = zip_of_zeros(64 << 20)
    for _ in range(MAX_NESTING):
        level = _zip_of({"x.zip": level}, zipfile.ZIP_STORED)
    assert _stream(level).expanded == 64 << 20
    deeper = _zip_of({"x.zip": level}, zipfile.ZIP_STORED)
    assert _stream(deeper).expanded < 1 << 20  # past MAX_NESTING: clamd's MaxRecursion and the directory judge


def test_real_documents_and_archives_of_archives_keep_their_real_figures() -> None:
    rows = "".join(f'<row r="{i}"><c r="A{i}"><v>{i}</v></c></row>' for i in range(1, 50_001))
    xlsx = _zip_of({"xl/worksheets/sheet1.xml": rows.encode(), "xl/media/a.png": bytes(range(256)) * 400}, 8)
    docx = _zip_of({"word/document.xml": b"<w:p>Cong van</w:p>" * 20_000, "word/embeddings/a.xlsx": xlsx}, 8)
    bundle = _zip_of({"bao-cao.docx": docx, "so-lieu.xlsx": xlsx, "ghi-chu.zip": _zip_of({"a.txt": b"x"}, 8)}, 0)
    stream = _stream(bundle)
    assert stream.entries == 3
    assert stream.ratio < 30  # real content: the same figures as a zip read on its own
    plain_sizes = len(rows) * 2 + 20_000 * 19 + 102_400 * 2
    assert stream.expanded < 2 * plain_sizes


def test_entries_with_sizes_after_the_data_stop_the_reading_without_error() -> None:
    data = bytearray(_zip_of({"a.txt": b"x" * 100_000}, zipfile.ZIP_DEFLATED))
    # as a streaming writer leaves it: flag bit 3, zero sizes, the real ones after the data
    data[6:8] = (8).to_bytes(2, "little")
    data[18:26] = bytes(8)
    stream = _stream(bytes(data))
    assert not stream.alive and stream.entries == 0
    assert _stream(b"not a zip at all" * 10).entries == 0


def test_inflating_nested_zips_is_bounded_by_the_budget() -> None:
    inner = _zip_of({"x.bin": bytes(8 << 20)}, zipfile.ZIP_STORED)  # an 8 MiB stored zip: deflates to ~8 kB
    outer = _zip_of({"a.zip": inner}, zipfile.ZIP_DEFLATED)
    assert len(outer) < 100_000
    small = ZipStream(budget=[1 << 20])
    small.feed(outer)
    assert small.entries == 1 and small.budget[0] <= 0  # stopped at the budget, nothing raised


def test_gzip_expanded_size_from_its_trailer() -> None:
    data = gzip.compress(bytes(4 << 20), mtime=0)
    assert gzip_isize(data[-8:], len(data)) == (4 << 20, 0.0)  # a small file: no ratio below RATIO_FLOOR
    big = gzip.compress(bytes(256 << 20), compresslevel=1, mtime=0)
    expanded, ratio = gzip_isize(big[-8:], len(big))
    assert expanded == 256 << 20 and ratio > 100
    assert gzip_isize(b"\x1f\x8b", 2) == (0, 0.0)
