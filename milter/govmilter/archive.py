"""Names and encryption flags of a zip archive, read from its central directory.

Nothing is extracted. The central directory sits at the end of a zip, so the
MIME walk keeps only a bounded tail of an attachment that starts like a zip
and hands that tail here when the part ends. A directory larger than the tail
is reported as such instead of being read.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

LOCAL_HEADER = b"PK\x03\x04"
EMPTY_ARCHIVE = b"PK\x05\x06"  # an archive with no entries is only its end record

_EOCD = struct.Struct("<4sHHHHIIH")  # end of central directory record, 22 bytes
_EOCD64_LOCATOR = struct.Struct("<4sIQI")  # 20 bytes
_EOCD64 = struct.Struct("<4sQHHIIQQQQ")  # 56 bytes
_ENTRY = struct.Struct("<4sHHHHHHIIIHHHHHII")  # central directory file header, 46 bytes
_LOCAL = struct.Struct("<4sHHH")  # start of a local file header
_AES = 99  # compression method of WinZip AES encryption
_MAX_COMMENT = 65535


@dataclass(frozen=True)
class ZipListing:
    names: tuple[str, ...] = ()
    encrypted: bool = False
    problem: str = ""  # "" or a defect name: archive-directory-too-large, archive-broken, ...


def looks_like_zip(head: bytes) -> bool:
    return head.startswith(LOCAL_HEADER) or head.startswith(EMPTY_ARCHIVE)


def local_header_encrypted(head: bytes) -> bool:
    """The first local file header's encryption flag (seen even when the directory is not)."""
    if len(head) < _LOCAL.size or not head.startswith(LOCAL_HEADER):
        return False
    _, _, flags, method = _LOCAL.unpack_from(head)
    return bool(flags & 1) or method == _AES


def read_directory(tail: bytes, total_size: int, max_names: int) -> ZipListing:
    """List the archive whose last `len(tail)` bytes (of `total_size`) are `tail`."""
    eocd = _find_eocd(tail)
    if eocd < 0:
        return ZipListing(problem="archive-broken")
    _, _, _, _, count, cd_size, cd_offset, _ = _EOCD.unpack_from(tail, eocd)
    cd_end = eocd
    # zip64 end records sit between the directory and the end record; some tools write
    # them even for small archives, so their locator is looked for every time
    found = _zip64(tail, eocd)
    if found is not None:
        count, cd_size, cd_end = found
    elif count == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
        return ZipListing(problem="archive-broken")
    cd_start = cd_end - cd_size
    if cd_start < 0:
        problem = "archive-directory-too-large" if total_size > len(tail) else "archive-broken"
        return ZipListing(problem=problem)
    return _entries(tail, cd_start, cd_end, count, max_names)


def _find_eocd(tail: bytes) -> int:
    """Position of the last plausible end record (its comment must fit in the tail)."""
    floor = max(0, len(tail) - _EOCD.size - _MAX_COMMENT)
    position = len(tail)
    while True:
        position = tail.rfind(EMPTY_ARCHIVE, floor, position)
        if position < 0 or position + _EOCD.size > len(tail):
            if position < 0:
                return -1
            continue
        comment_length = _EOCD.unpack_from(tail, position)[7]
        if position + _EOCD.size + comment_length <= len(tail):
            return position


def _zip64(tail: bytes, eocd: int) -> tuple[int, int, int] | None:
    locator = eocd - _EOCD64_LOCATOR.size
    if locator < 0 or tail[locator : locator + 4] != b"PK\x06\x07":
        return None
    record = tail.rfind(b"PK\x06\x06", 0, locator)
    if record < 0 or record + _EOCD64.size > len(tail):
        return None
    fields = _EOCD64.unpack_from(tail, record)
    count, cd_size = fields[7], fields[8]
    return min(count, 1 << 31), cd_size, record


def _entries(tail: bytes, start: int, end: int, count: int, max_names: int) -> ZipListing:
    names: list[str] = []
    encrypted = False
    position = start
    problem = ""
    for _ in range(count):
        if position + _ENTRY.size > end or tail[position : position + 4] != b"PK\x01\x02":
            problem = "archive-broken"
            break
        fields = _ENTRY.unpack_from(tail, position)
        flags, method = fields[3], fields[4]
        name_length, extra_length, comment_length = fields[10], fields[11], fields[12]
        raw_name = tail[position + _ENTRY.size : position + _ENTRY.size + name_length]
        position += _ENTRY.size + name_length + extra_length + comment_length
        encrypted = encrypted or bool(flags & 1) or method == _AES
        if len(names) < max_names:
            # bit 11: the name is UTF-8; otherwise the historical code page 437
            names.append(raw_name.decode("utf-8" if flags & 0x800 else "cp437", "replace")[:255])
        elif not problem:
            problem = "archive-names-truncated"
    return ZipListing(tuple(names), encrypted, problem)
