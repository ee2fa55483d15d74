"""Content-Transfer-Encoding decoders that work chunk by chunk.

Each decoder takes the encoded body of one MIME part in pieces of any size
(a piece may end in the middle of a base64 quantum or a `=XX` escape) and
returns the decoded bytes of that piece; `finish()` returns what the last
piece left over. Nothing is kept beyond a few bytes of carry, so a part of any
size is decoded in bounded memory. They never raise on bad input: a problem is
noted in `defects` and decoding goes on, because mail in the wild is broken.
"""

from __future__ import annotations

import binascii
import re
from typing import Protocol

_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# every byte that is neither in the alphabet nor the pad: line breaks, spaces, junk
_B64_DROP = bytes(b for b in range(256) if b not in _B64_ALPHABET and b != ord("="))
_B64_SPACE = b" \t\r\n"


class Decoder(Protocol):
    defects: set[str]

    def feed(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class IdentityDecoder:
    """7bit, 8bit and binary: the bytes are the content."""

    def __init__(self) -> None:
        self.defects: set[str] = set()

    def feed(self, data: bytes) -> bytes:
        return data

    def finish(self) -> bytes:
        return b""


class Base64Decoder:
    """base64 that tolerates any line length, junk characters and broken padding.

    Characters outside the alphabet are dropped. A pad (`=`) ends a segment:
    some mailers concatenate separately padded pieces, so decoding resumes
    after it instead of stopping as binascii does. A segment that ends short
    of a full quantum is padded; a lone trailing character carries no byte.
    """

    def __init__(self) -> None:
        self.defects: set[str] = set()
        self._carry = b""

    def feed(self, data: bytes) -> bytes:
        clean = data.translate(None, _B64_DROP)
        if len(clean) != len(data) and "base64-junk" not in self.defects:
            if data.translate(None, _B64_SPACE).translate(None, _B64_DROP) != data.translate(None, _B64_SPACE):
                self.defects.add("base64-junk")
        if not clean:
            return b""
        buf = self._carry + clean if self._carry else clean
        if b"=" not in buf:
            whole = len(buf) - len(buf) % 4
            self._carry = buf[whole:]
            return binascii.a2b_base64(buf[:whole])
        pieces = buf.split(b"=")
        out = [self._segment(piece) for piece in pieces[:-1] if piece]
        last = pieces[-1]
        whole = len(last) - len(last) % 4
        self._carry = last[whole:]
        out.append(binascii.a2b_base64(last[:whole]))
        if len(pieces) > 2 and any(pieces[1:-1]):
            self.defects.add("base64-padding")  # data after a pad: concatenated segments
        return b"".join(out)

    def finish(self) -> bytes:
        carry, self._carry = self._carry, b""
        return self._segment(carry) if carry else b""

    def _segment(self, piece: bytes) -> bytes:
        """Decode a segment that ends here, padding it to a whole quantum."""
        short = len(piece) % 4
        if short == 1:
            self.defects.add("base64-padding")
            piece = piece[:-1]
        elif short:
            piece += b"=" * (4 - short)
        try:
            return binascii.a2b_base64(piece)
        except binascii.Error:  # cannot happen on alphabet-only input; stay defined anyway
            self.defects.add("base64-invalid")
            return b""


_QP_LINE_HOLD = 8192  # far longer than a real line (RFC 2045: 76); the held line stays bounded


class QuotedPrintableDecoder:
    """quoted-printable; an `=` escape or soft line break may straddle two pieces."""

    def __init__(self) -> None:
        self.defects: set[str] = set()
        self._carry = b""

    def feed(self, data: bytes) -> bytes:
        buf = self._carry + data if self._carry else data
        # binascii resolves every escape within its line, and a broken soft break ("=\r" not
        # followed by LF) swallows the rest of the line: decode whole lines, keep the last one
        end = buf.rfind(b"\n") + 1
        if len(buf) - end > _QP_LINE_HOLD:
            # a line without end: decode it now, but for an `=` in the last two bytes ("=X")
            cut = buf.rfind(b"=", max(end, len(buf) - 2))
            end = cut if cut != -1 else len(buf)
        self._carry = buf[end:]
        return binascii.a2b_qp(buf[:end]) if end else b""

    def finish(self) -> bytes:
        carry, self._carry = self._carry, b""
        return binascii.a2b_qp(carry) if carry else b""


def make_decoder(transfer_encoding: str) -> Decoder:
    """The decoder for a Content-Transfer-Encoding value (lower-case, stripped)."""
    if transfer_encoding == "base64":
        return Base64Decoder()
    if transfer_encoding == "quoted-printable":
        return QuotedPrintableDecoder()
    if transfer_encoding in UUENCODE_NAMES:
        return UUDecoder()
    decoder = IdentityDecoder()
    if transfer_encoding not in ("", "7bit", "8bit", "binary"):
        decoder.defects.add("unknown-transfer-encoding")
    return decoder


# ---- uuencode blocks inside text bodies -------------------------------------------------

_UU_BEGIN = re.compile(rb"^begin(?:-base64)? +[0-7]{3,4} +([^\r\n]+?)[ \t]*\r?$", re.M)
_UU_LINE_HOLD = 1024  # a partial line longer than this cannot be a begin line


class UUSink(Protocol):
    def take(self, data: bytes) -> None: ...

    def close(self) -> None: ...


def find_uu_begin(buf: bytes, pos: int, end: int) -> re.Match[bytes] | None:
    """What _UU_BEGIN.search(buf, pos, end) finds, looking only where a line starts with "begin".

    The pattern's "^" keeps re from skipping ahead to a literal: searched
    directly, it is tried at every byte of every text body.
    """
    i = buf.find(b"begin", pos, end)
    while i >= 0:
        if i == 0 or buf[i - 1] == 0x0A:  # "^" in multi-line mode
            match = _UU_BEGIN.match(buf, i, end)
            if match:
                return match
        i = buf.find(b"begin", i + 1, end)
    return None


class UUScanner:
    """Finds `begin NNN name` ... `end` blocks in decoded text and decodes their lines.

    `open_block(name)` is called at each begin line and returns the sink that
    receives the block's decoded bytes; the sink is closed at `end`, at the end
    of the text, or when the block turns out not to be uuencode after all.
    """

    def __init__(self, open_block: _OpenBlock):
        self.open_block = open_block
        self.defects: set[str] = set()
        self.blocks = 0
        self._carry = b""  # the start of an unfinished line
        self._sink: UUSink | None = None

    def feed(self, data: bytes) -> None:
        buf = self._carry + data if self._carry else data
        end = buf.rfind(b"\n") + 1  # only whole lines are read now
        pos = 0
        while pos < end:
            if self._sink is None:
                match = find_uu_begin(buf, pos, end)
                if match is None:
                    break
                self.blocks += 1
                name = match.group(1).decode("utf-8", "replace")
                self._sink = self.open_block(name)
                pos = buf.find(b"\n", match.end()) + 1 or end
            else:
                pos = self._lines(buf, pos, end)
        rest = buf[end:]
        if len(rest) > _UU_LINE_HOLD:
            if self._sink is not None:
                self._close("uuencode-broken")
            rest = b"#"  # keeps `^begin` from matching in the middle of this long line
        self._carry = rest

    def finish(self) -> None:
        if self._carry and self._sink is not None:
            self._line(self._carry.rstrip(b"\r\n"))
        self._carry = b""
        if self._sink is not None:
            self._close("uuencode-unterminated")

    def _lines(self, buf: bytes, pos: int, end: int) -> int:
        while pos < end and self._sink is not None:
            nl = buf.find(b"\n", pos, end)
            line = buf[pos:nl].rstrip(b"\r")
            pos = nl + 1
            self._line(line)
        return pos

    def _line(self, line: bytes) -> None:
        if self._sink is None:
            return
        stripped = line.strip()
        if stripped == b"end":
            self._close("")
            return
        if not stripped:
            return
        count = (line[0] - 32) & 63
        if count == 0:
            return  # the "`" line before end
        # a line that cannot hold `count` bytes is not uuencode: the block has ended
        if len(line) - 1 < (count * 4 + 2) // 3:
            self._close("uuencode-broken")
            return
        try:
            self._sink.take(binascii.a2b_uu(line))
        except binascii.Error:
            self._sink.take(bytes(count))  # the size is what the cap needs
            self.defects.add("uuencode-invalid")

    def _close(self, defect: str) -> None:
        if defect:
            self.defects.add(defect)
        if self._sink is not None:
            self._sink.close()
            self._sink = None


class _OpenBlock(Protocol):
    def __call__(self, filename: str) -> UUSink: ...


# not in any RFC, but written by mailers and understood by mail clients
UUENCODE_NAMES = frozenset({"x-uuencode", "x-uue", "uuencode", "x-uu"})


class UUDecoder:
    """Content-Transfer-Encoding x-uuencode: the part's content is a uuencoded block."""

    def __init__(self) -> None:
        self.defects: set[str] = set()
        self._out: list[bytes] = []
        self._scanner = UUScanner(self._open)

    def _open(self, filename: str) -> UUDecoder:
        return self  # every block of the part is the part's content

    def take(self, data: bytes) -> None:
        self._out.append(data)

    def close(self) -> None:
        pass

    def feed(self, data: bytes) -> bytes:
        self._scanner.feed(data)
        return self._drain()

    def finish(self) -> bytes:
        self._scanner.finish()
        self.defects |= self._scanner.defects
        if not self._scanner.blocks:
            self.defects.add("uuencode-missing")
        return self._drain()

    def _drain(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out
