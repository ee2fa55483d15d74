"""Chunked transfer decoders: any split of the input gives the bytes of a one-piece decode."""

from __future__ import annotations

import base64
import binascii
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from govmilter.mime.decoders import (
    Base64Decoder,
    DataURIScanner,
    QuotedPrintableDecoder,
    UUScanner,
    YEncScanner,
    decode_yenc,
    make_decoder,
)


def run(decoder: Base64Decoder | QuotedPrintableDecoder, pieces: list[bytes]) -> bytes:
    return b"".join(decoder.feed(p) for p in pieces) + decoder.finish()


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.lists(st.integers(min_value=0, max_value=2000), max_size=8))
def test_base64_any_split(data: bytes, cuts: list[int]) -> None:
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    assert run(Base64Decoder(), splits(encoded, cuts)) == data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.lists(st.integers(min_value=0, max_value=3000), max_size=8))
def test_quoted_printable_any_split(data: bytes, cuts: list[int]) -> None:
    encoded = binascii.b2a_qp(data, quotetabs=True, istext=False).replace(b"\n", b"\r\n")
    assert run(QuotedPrintableDecoder(), splits(encoded, cuts)) == data


@pytest.mark.parametrize(
    ("encoded", "decoded", "defect"),
    [
        (b"QUJD", b"ABC", ""),
        (b"QUI", b"AB", ""),  # missing pad
        (b"QQ", b"A", ""),
        (b"QUJDR", b"ABC", "base64-padding"),  # a lone trailing character carries no byte
        (b"QQ==QUI=", b"AAB", "base64-padding"),  # two padded segments glued together
        (b"QU*J\x00D", b"ABC", "base64-junk"),
        (b"Q\r\nU\r\nJ\r\nD\r\n", b"ABC", ""),
    ],
)
def test_base64_broken_input(encoded: bytes, decoded: bytes, defect: str) -> None:
    decoder = Base64Decoder()
    assert run(decoder, [encoded]) == decoded
    assert decoder.defects == ({defect} if defect else set())


_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([b"QUJD", b"RA==", b"\r\n", b" ", b"\t", b"*", b"\x00", b"\xff", b"-", b"Q"])),
    st.lists(st.integers(min_value=0, max_value=400), max_size=6),
)
def test_base64_junk_is_a_byte_outside_the_alphabet_and_white_space(pieces: list[bytes], cuts: list[int]) -> None:
    """The defect and the bytes are those of the definition, whatever the split (the two-pass feed)."""
    encoded = b"".join(pieces)
    decoder = Base64Decoder()
    decoded = run(decoder, splits(encoded, cuts))
    junk = any(byte not in _ALPHABET and byte not in b" \t\r\n" for byte in encoded)
    assert ("base64-junk" in decoder.defects) == junk
    assert decoded == run(Base64Decoder(), [bytes(b for b in encoded if b in _ALPHABET)])


def test_identity_and_unknown() -> None:
    assert make_decoder("8bit").feed(b"abc") == b"abc"
    assert make_decoder("x-unknown").defects == {"unknown-transfer-encoding"}


class Sink:
    def __init__(self, found: list[tuple[str, bytes]], name: str):
        self.found = found
        self.name = name
        self.data = b""

    def take(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        self.found.append((self.name, self.data))


@pytest.mark.parametrize("piece", [1, 3, 64, 10_000])
def test_uuencode_blocks(piece: int) -> None:
    one = bytes(range(256)) * 3
    two = b"second file"
    block_one = b"".join(binascii.b2a_uu(one[i : i + 45]) for i in range(0, len(one), 45))
    text = (
        b"Hello\r\nbegin 644 one.bin\r\n" + block_one.replace(b"\n", b"\r\n") + b"`\r\nend\r\n"
        b"between\r\nbegin 600 two file.txt\r\n" + binascii.b2a_uu(two).replace(b"\n", b"\r\n") + b"end\r\n"
        b"not begin 644 three\r\nbye\r\n"
    )
    found: list[tuple[str, bytes]] = []
    scanner = UUScanner(lambda name: Sink(found, name))
    for i in range(0, len(text), piece):
        scanner.feed(text[i : i + piece])
    scanner.finish()
    assert found == [("one.bin", one), ("two file.txt", two)]
    assert scanner.defects == set()


def test_uuencode_without_end_is_closed_at_the_end_of_the_text() -> None:
    found: list[tuple[str, bytes]] = []
    scanner = UUScanner(lambda name: Sink(found, name))
    scanner.feed(b"begin 644 a.exe\r\n" + binascii.b2a_uu(b"MZ payload"))
    scanner.finish()
    assert found == [("a.exe", b"MZ payload")]
    assert scanner.defects == {"uuencode-unterminated"}


def test_uuencode_transfer_encoding() -> None:
    payload = bytes(range(256)) * 2
    lines = b"".join(binascii.b2a_uu(payload[i : i + 45]) for i in range(0, len(payload), 45))
    encoded = (b"begin 644 a.bin\n" + lines + b"`\nend\n").replace(b"\n", b"\r\n")
    decoder = make_decoder("x-uuencode")
    assert b"".join(decoder.feed(encoded[i : i + 7]) for i in range(0, len(encoded), 7)) + decoder.finish() == payload
    assert decoder.defects == set()
    empty = make_decoder("x-uue")
    assert empty.feed(b"not uuencoded\r\n") + empty.finish() == b""
    assert empty.defects == {"uuencode-missing"}


# ---- yEnc and data: URIs ------------------------------------------------------------------


def reference_yenc_decode(data: bytes) -> bytes:
    """A byte-by-byte yEnc decoder, the way the format describes it."""
    out = bytearray()
    escape = False
    for byte in data:
        if byte in (10, 13):
            continue
        if escape:
            out.append((byte - 106) & 255)
            escape = False
        elif byte == 61:
            escape = True
        else:
            out.append((byte - 42) & 255)
    return bytes(out)


class BlockSink:
    def __init__(self, name: str, blocks: list[tuple[str, bytearray]]):
        self.data = bytearray()
        blocks.append((name, self.data))
        self.closed = False

    def take(self, data: bytes) -> None:
        assert not self.closed
        self.data += data

    def close(self) -> None:
        self.closed = True


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(min_value=0, max_value=2000), max_size=8))
def test_yenc_decode_matches_the_reference_on_any_input_and_split(data: bytes, cuts: list[int]) -> None:
    """Hostile content too: escape runs, escapes of every byte value, `=` at a piece's end."""
    out = bytearray()
    carry = b""
    for piece in splits(data.replace(b"\r", b"").replace(b"\n", b""), cuts):
        decoded, carry = decode_yenc(carry + piece)
        out += decoded
    expected = reference_yenc_decode(data)
    if carry:  # a dangling escape at the very end carries no byte
        assert expected == bytes(out)
    assert bytes(out) == expected


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=50))
def test_yenc_scanner_any_piece_size(payload: bytes, piece: int) -> None:
    encoded = bytes(((b + 42) & 255) for b in payload)
    # escape the critical bytes, lines of 64
    escaped = bytearray()
    for value in encoded:
        if value in (0, 10, 13, 61):
            escaped += bytes((61, (value + 64) & 255))
        else:
            escaped.append(value)
    lines = b"\r\n".join(bytes(escaped[i : i + 64]) for i in range(0, len(escaped), 64))
    text = b"xin chao\r\n=ybegin line=64 size=1 name=x y.bin\r\n" + lines + b"\r\n=yend size=1\r\nhet\r\n"
    blocks: list[tuple[str, bytearray]] = []
    scanner = YEncScanner(lambda name: BlockSink(name, blocks))
    for i in range(0, len(text), piece):
        scanner.feed(text[i : i + piece])
    scanner.finish()
    assert [(name, bytes(data)) for name, data in blocks] == [("x y.bin", payload)]
    assert scanner.defects == set()


def test_data_uri_scanner_ends_payloads_where_browsers_do() -> None:
    text = (
        b'<img src="data:image/gif;base64,R0lG\r\nODlh">'
        b"<a href='DATA:text/html,%3Cb%3Ex%3C/b%3E'>"
        b"url(data:font/woff2;charset=utf-8;base64,d09G MgAB)"
    )
    for piece in (1, 2, 3, 7, 1000):
        blocks: list[tuple[str, bytearray]] = []
        scanner = DataURIScanner(lambda name, blocks=blocks: BlockSink(name, blocks))  # type: ignore[misc]
        for i in range(0, len(text), piece):
            scanner.feed(text[i : i + piece])
        scanner.finish()
        assert [(name, bytes(data)) for name, data in blocks] == [
            ("image/gif", b"GIF89a"),
            ("text/html", b"<b>x</b>"),
            ("font/woff2", base64.b64decode(b"d09GMgAB")),
        ], piece


@settings(max_examples=400, deadline=None)
@given(
    st.binary(max_size=900),
    st.integers(min_value=1, max_value=120),
    st.sampled_from([b"\r\n", b"\n"]),
    st.booleans(),
    st.lists(st.integers(min_value=0, max_value=3000), max_size=10),
)
def test_base64_whole_lines_decode_as_the_clean_stream(
    data: bytes, width: int, newline: bytes, pad: bool, cuts: list[int]
) -> None:
    """Pieces of whole lines are decoded by binascii as they are (the fast path), lines of any width,
    a width that is no multiple of 4 included (the general path then): the same bytes either way."""
    stream = base64.b64encode(data)
    if not pad:
        stream = stream.rstrip(b"=")
    encoded = newline.join(stream[i : i + width] for i in range(0, len(stream), width)) + newline
    decoder = Base64Decoder()
    decoded = run(decoder, splits(encoded, cuts))
    reference = Base64Decoder()
    assert decoded == run(reference, [stream]) == data
    assert decoder.defects == reference.defects == set()
