"""Zip archives of zeros built by hand, fast: the deflate stream is one block repeated.

A block compressed with a full flush stands alone (the compressor forgets its
window), so the same bytes can be written again and again; an empty final block
ends the stream. 2 GiB of zeros take a second (the CRC), not a minute of zlib.
"""

from __future__ import annotations

import struct
import zlib

_BLOCK = 1 << 20  # bytes of zeros per repeated deflate block


def _deflated_zeros(size: int) -> tuple[bytes, int]:
    """(raw deflate stream of `size` zeros, its CRC-32); size a multiple of 1 MiB."""
    assert size % _BLOCK == 0
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(_BLOCK)) + compressor.flush(zlib.Z_FULL_FLUSH)
    final = zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # an empty last block
    zeros = bytes(_BLOCK)
    crc = 0
    for _ in range(size // _BLOCK):
        crc = zlib.crc32(zeros, crc)
    return block * (size // _BLOCK) + final, crc


def zip_of_zeros(size: int, name: str = "bao-cao.txt", zip64: bool = False) -> bytes:
    """A valid zip holding one deflated entry of `size` zero bytes.

    With zip64 (needed from 4 GiB) the directory entry's sizes read 0xFFFFFFFF and the
    real ones are in its zip64 extra field.
    """
    data, crc = _deflated_zeros(size)
    raw_name = name.encode()
    sizes = (0xFFFFFFFF, 0xFFFFFFFF) if zip64 else (len(data), size)
    extra = struct.pack("<HHQQ", 1, 16, size, len(data)) if zip64 else b""
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 45, 0, 8, 0, 0x21, crc, *sizes, len(raw_name), len(extra))
    central = struct.pack(
        "<4sHHHHHHIIIHHHHHII",
        b"PK\x01\x02",
        45,
        45,
        0,
        8,
        0,
        0x21,
        crc,
        *sizes,
        len(raw_name),
        len(extra),
        0,
        0,
        0,
        0,
        0,
    )
    local += raw_name + extra
    directory = central + raw_name + extra
    offset = len(local) + len(data)
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(directory), offset, 0)
    return local + data + directory + end
