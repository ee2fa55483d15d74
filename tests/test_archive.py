"""Zip central directories read from a bounded tail, never extracted."""

from __future__ import annotations

import io
import zipfile

import pytest

from govmilter.archive import local_header_encrypted, looks_like_zip, read_directory


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
