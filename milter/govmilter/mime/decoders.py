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
from urllib.parse import unquote_to_bytes

# pybase64 (SIMD base64 in C) instead of binascii.a2b_base64: the same answers and the same
# binascii.Error, 7-13 times faster on attachments (3.5 GB/s against 270-490 MB/s on CRLF lines,
# Python 3.11): decoding was the largest share of the milter's time on the traffic corpus
from pybase64 import b64decode as _decode_base64

_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# every byte that is neither in the alphabet nor the pad: line breaks, spaces, junk
_B64_DROP = bytes(b for b in range(256) if b not in _B64_ALPHABET and b != ord("="))
_B64_SPACE = b" \t\r\n"
# what a well-formed base64 body holds: the alphabet and line breaks (the pad only at its end)
_B64_LINES = _B64_ALPHABET + b"\r\n"


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
        # the common piece, whole lines of the alphabet: decoded as it is (the decoder skips the
        # line breaks itself), after one scan that finds nothing else in it (a translate that keeps
        # only what is not expected writes next to nothing). Measured on the corpus's attachments:
        # half the time of copying the piece twice without its line breaks and junk first.
        buf = self._carry + data if self._carry else data
        if b"=" not in buf and not buf.translate(None, _B64_LINES):
            cut = buf.rfind(b"\n") + 1
            if cut:
                try:
                    decoded = _decode_base64(memoryview(buf)[:cut])  # no copy of the lines
                except binascii.Error:  # the lines do not hold whole quanta: the general path below
                    pass
                else:
                    self._carry = buf[cut:].translate(None, _B64_DROP)  # a part of a line: alphabet only
                    return decoded
        # the general path: two passes over the piece (line breaks out, then anything else out of
        # the alphabet), then the pads; the carry is alphabet only
        spaceless = data.translate(None, _B64_SPACE)
        clean = spaceless.translate(None, _B64_DROP)
        if len(clean) != len(spaceless):
            self.defects.add("base64-junk")
        if not clean:
            return b""
        buf = self._carry + clean if self._carry else clean
        if b"=" not in buf:
            whole = len(buf) - len(buf) % 4
            self._carry = buf[whole:]
            return _decode_base64(buf[:whole])
        pieces = buf.split(b"=")
        out = [self._segment(piece) for piece in pieces[:-1] if piece]
        last = pieces[-1]
        whole = len(last) - len(last) % 4
        self._carry = last[whole:]
        out.append(_decode_base64(last[:whole]))
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
            return _decode_base64(piece)
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


# ---- yEnc blocks inside text bodies ------------------------------------------------------

_YENC_BEGIN = re.compile(rb"^=ybegin[ \t][^\r\n]*?name=[ \t]*([^\r\n]*?)[ \t]*\r?$", re.M)
_YENC_SHIFT = bytes((b - 42) & 255 for b in range(256))
_YENC_ESCAPE = re.compile(rb"=(.)", re.S)
_YENC_SPACE = b"\r\n"
_YENC_LINE_HOLD = 1024  # a partial line longer than this cannot be a control line


def decode_yenc(data: bytes) -> tuple[bytes, bytes]:
    """Decode yEnc content without line breaks; return (bytes, carry for the next piece).

    Every byte is its value + 42; `=` escapes the next byte (+ 64 more). The escapes are
    undone with one bytes.replace per escaped value present (a handful in real yEnc, at
    most 256 on hostile input), never a loop per byte.
    """
    carry = b""
    if data.endswith(b"="):
        run = len(data) - len(data.rstrip(b"="))
        if run % 2:  # the last `=` escapes a byte of the next piece
            data, carry = data[:-1], b"="
    if b"=" not in data:
        return data.translate(_YENC_SHIFT), carry
    # `==` first, left to right as a decoder reads it: after this no two `=` touch
    data = data.replace(b"==", b"\xfd")  # (0x3d - 64) & 255: the escaped `=`, before the shift
    escaped = set(_YENC_ESCAPE.findall(data))
    last = b"}"  # "=}" becomes "=": replaced last, so that no later pass reads it as an escape
    for value in sorted(escaped - {last}):
        data = data.replace(b"=" + value, bytes(((value[0] - 64) & 255,)))
    if last in escaped:
        data = data.replace(b"=" + last, b"=")
    return data.translate(_YENC_SHIFT), carry


class YEncScanner:
    """Finds `=ybegin ... name=x` ... `=yend` blocks in decoded text and decodes them.

    Like UUScanner: `open_block(name)` gives the sink of each block's decoded bytes,
    closed at `=yend` or at the end of the text. Multi-part headers (`=ypart`) are
    skipped. Text without the literal `=ybegin` costs one bytes search per piece.
    """

    def __init__(self, open_block: _OpenBlock):
        self.open_block = open_block
        self.defects: set[str] = set()
        self.blocks = 0
        self._carry = b""  # the start of an unfinished line
        self._escape = b""  # a trailing escape of the block's last piece
        self._sink: UUSink | None = None
        self._header = False  # right after =ybegin: an =ypart line may follow

    def feed(self, data: bytes) -> None:
        buf = self._carry + data if self._carry else data
        end = buf.rfind(b"\n") + 1  # only whole lines are read now
        pos = 0
        while pos < end:
            if self._sink is None:
                start = buf.find(b"=ybegin", pos, end)
                if start < 0:
                    break
                match = _YENC_BEGIN.match(buf, start, end) if start == 0 or buf[start - 1] == 0x0A else None
                if match is None:
                    pos = start + 7
                    continue
                self.blocks += 1
                self._sink = self.open_block(match.group(1).decode("utf-8", "replace"))
                self._header = True
                pos = buf.find(b"\n", match.end()) + 1 or end
            else:
                pos = self._content(buf, pos, end)
        rest = buf[end:]
        if len(rest) > _YENC_LINE_HOLD:
            if self._sink is not None:  # a long data line: decode it now, it is no control line
                self._take(rest)
            rest = b"#"  # keeps `^=ybegin` from matching in the middle of this long line
        self._carry = rest

    def finish(self) -> None:
        if self._sink is not None:
            carry = self._carry.rstrip(b"\r\n")
            if carry and not carry.startswith(b"=yend"):
                self._take(carry)
            self._close("yenc-unterminated")
        self._carry = b""

    def _content(self, buf: bytes, pos: int, end: int) -> int:
        """Decode whole lines from pos up to the =yend line (or `end`); return where to go on."""
        if self._header and buf.startswith(b"=ypart", pos):
            pos = buf.find(b"\n", pos, end) + 1 or end
        self._header = False
        if buf.startswith(b"=yend", pos):
            stop = pos
        else:
            found = buf.find(b"\n=yend", pos, end)
            stop = found + 1 if found >= 0 else end
        if stop > pos:
            self._take(buf[pos:stop])
        if stop < end:  # the =yend line
            self._flush()
            self._close("")
            return buf.find(b"\n", stop, end) + 1 or end
        return end

    def _take(self, data: bytes) -> None:
        clean = data.translate(None, _YENC_SPACE)
        decoded, self._escape = decode_yenc(self._escape + clean if self._escape else clean)
        if decoded and self._sink is not None:
            self._sink.take(decoded)

    def _flush(self) -> None:
        if self._escape:
            self._escape = b""
            self.defects.add("yenc-broken")

    def _close(self, defect: str) -> None:
        self._flush()
        if defect:
            self.defects.add(defect)
        if self._sink is not None:
            self._sink.close()
            self._sink = None


# ---- data: URIs inside text bodies --------------------------------------------------------

# data:[<media type>][;parameters],<payload>  (RFC 2397; browsers read the scheme in any case)
_DATA_HEAD = re.compile(rb"data:([a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+)?((?:;[^,;\"'<>()\s]{0,64}){0,8}),")
_WORD = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_-.+")  # "metadata:" is no data: URI
_DATA_HEAD_HOLD = 300  # the longest header read: "data:" and a media type with parameters
_B64_PAYLOAD_END = re.compile(rb"[^A-Za-z0-9+/=\s]")  # browsers drop ASCII white space in base64
_PERCENT_PAYLOAD_END = re.compile(rb"[\s\"'<>()]")


class PercentDecoder:
    """The percent-encoded payload of a data: URI that is not base64."""

    def __init__(self) -> None:
        self.defects: set[str] = set()
        self._carry = b""

    def feed(self, data: bytes) -> bytes:
        buf = self._carry + data if self._carry else data
        cut = buf.rfind(b"%", max(0, len(buf) - 2))  # an escape that may go on in the next piece
        if cut >= 0:
            buf, self._carry = buf[:cut], buf[cut:]
        else:
            self._carry = b""
        return unquote_to_bytes(buf) if b"%" in buf else buf

    def finish(self) -> bytes:
        carry, self._carry = self._carry, b""
        return carry


class DataURIScanner:
    """Finds `data:<type>[;base64],<payload>` URIs in decoded text and decodes their payload.

    `open_block(media_type)` gives each URI's sink. A payload ends at the first byte
    that cannot belong to it (a quote, `<`, `)`, and for base64 anything outside the
    alphabet and white space), or at the end of the text. Text without "data:" (in any
    case) costs one lower() and one search per piece.
    """

    def __init__(self, open_block: _OpenBlock):
        self.open_block = open_block
        self.defects: set[str] = set()
        self.blocks = 0
        self._carry = b""
        self._sink: UUSink | None = None
        self._decoder: Decoder | None = None
        self._end: re.Pattern[bytes] = _B64_PAYLOAD_END

    def feed(self, data: bytes) -> None:
        buf = self._carry + data if self._carry else data
        self._carry = b""
        pos = 0
        low: bytes | None = None
        while pos < len(buf):
            if self._sink is not None:
                found = self._end.search(buf, pos)
                if found is None:
                    self._take(buf[pos:] if pos else buf)
                    return
                self._take(buf[pos : found.start()])
                self._close()
                pos = found.start()
                continue
            if low is None:
                low = buf.lower()
            start = low.find(b"data:", pos)
            if start < 0:
                self._carry = buf[max(pos, len(buf) - 5) :]  # a "data" cut by the piece, and the byte before
                return
            head = _DATA_HEAD.match(low, start, start + _DATA_HEAD_HOLD)
            if start > 0 and low[start - 1] in _WORD:
                pos = start + 5
                continue
            if head is None:
                if len(buf) - start < _DATA_HEAD_HOLD and b"," not in low[start:]:
                    self._carry = buf[start:]  # the header may end in the next piece
                    return
                pos = start + 5
                continue
            self._open(head)
            pos = head.end()

    def finish(self) -> None:
        if self._sink is not None:
            self._close()
        self._carry = b""

    def _open(self, head: re.Match[bytes]) -> None:
        media = (head.group(1) or b"text/plain").decode("ascii", "replace")
        params = head.group(2).replace(b" ", b"").split(b";")
        self.blocks += 1
        if b"base64" in params:
            self._decoder, self._end = Base64Decoder(), _B64_PAYLOAD_END
        else:
            self._decoder, self._end = PercentDecoder(), _PERCENT_PAYLOAD_END
        self._sink = self.open_block(media)

    def _take(self, data: bytes) -> None:
        if data and self._sink is not None and self._decoder is not None:
            self._sink.take(self._decoder.feed(data))

    def _close(self) -> None:
        if self._sink is not None and self._decoder is not None:
            self._sink.take(self._decoder.finish())
            self.defects |= self._decoder.defects
            self._sink.close()
        self._sink = None
        self._decoder = None
