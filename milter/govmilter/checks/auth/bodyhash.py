"""DKIM body hashes streamed from the spool: memory bounded by a chunk, whatever the message size.

dkimpy takes the whole message as one bytes object and rewrites the body several
times to canonicalize it (measured: ~90 MiB of heap for one 25.8 MB message). Here
the raw message is read in chunks, once: `split` hands back the header block (what
dkimpy still parses, for the header hash and b=) and the body as chunks; `digests`
canonicalizes the body as it streams, once per canonicalization, and feeds one
hasher per distinct (canonicalization, algorithm, l=) of the signatures.

The result is byte for byte what dkimpy computes (tests/checks/auth/test_bodyhash.py
compares them on generated bodies cut at every kind of place):

- lines: dkimpy splits the message on CRLF or a bare LF and joins with CRLF, so a
  bare LF counts as CRLF and a lone CR stays content (`_Lines`);
- simple (RFC 6376 3.4.3): every empty line at the end is dropped, the body ends
  with one CRLF (an empty body is one CRLF);
- relaxed (3.4.4): white space (SP, TAB) before a CRLF is dropped, every other run
  of it becomes one SP (dkimpy also keeps one SP for a run at the very end of a body
  without a final CRLF), empty lines at the end are dropped, and a body that is then
  empty hashes as nothing at all;
- l=: the first l octets of the canonical body (dkimpy cuts the canonical body).

Each stage holds back only what the next bytes may still change: a CR that an LF may
follow, a run of white space, the CRLFs at the end so far.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import dkim
from dkim.canonicalization import CanonicalizationPolicy, InvalidCanonicalizationPolicyError

# (body canonicalization b"simple" | b"relaxed", a= value, l= as an int or None)
BodyKey = tuple[bytes, bytes, "int | None"]

_LF = re.compile(rb"\r?\n")
_BLANKS = (0x20, 0x09)


def body_key(tags: dict[bytes, bytes]) -> BodyKey:
    """The body hash a signature's tags ask for; dkim.MessageFormatError for a bad c= (as dkimpy says)."""
    try:
        policy = CanonicalizationPolicy.from_c_value(tags.get(b"c", b"simple/simple"))
    except InvalidCanonicalizationPolicyError as exc:
        raise dkim.MessageFormatError(f"invalid c= value: {exc.args[0]!r}") from exc
    length = tags.get(b"l")
    return policy.body_algorithm.name, tags.get(b"a", b""), None if length is None else int(length)


class _Lines:
    """CRLF or a bare LF becomes CRLF, a lone CR stays (dkimpy's rfc822_parse); a final CR is held.

    `crlf`: the caller vouches that no line ends in a bare LF, so the chunks pass as they are.
    The look for one (two counts over every byte) was the largest share of the DKIM work.
    """

    def __init__(self, crlf: bool = False) -> None:
        self.held = b""
        self.crlf = crlf

    def feed(self, chunk: bytes) -> bytes:
        if self.crlf:
            return chunk
        data = self.held + chunk if self.held else chunk
        if data.endswith(b"\r"):
            data, self.held = data[:-1], b"\r"
        else:
            self.held = b""
        if data.count(b"\n") == data.count(b"\r\n"):  # no bare LF (always, through Postfix)
            return data
        return _LF.sub(b"\r\n", data)

    def end(self) -> bytes:
        held, self.held = self.held, b""
        return held


class _TrailingLines:
    """Drops the empty lines at the end of the body: CRLFs are held until content follows them."""

    def __init__(self, emit: Callable[[bytes], None]):
        self.emit = emit
        self.crlfs = 0  # CRLFs held (content may or may not follow)
        self.cr = b""  # a final CR held: it may start a CRLF
        self.content = False  # anything but held CRLFs emitted yet

    def feed(self, data: bytes) -> None:
        if self.cr:
            data = self.cr + data
            self.cr = b""
        if data.endswith(b"\r"):
            data, self.cr = data[:-1], b"\r"
        if not data:
            return
        end = len(data)
        while end >= 2 and data[end - 2 : end] == b"\r\n":
            end -= 2
        trailing = (len(data) - end) // 2
        if end == 0:  # only CRLFs: all held
            self.crlfs += trailing
            return
        self.emit(b"\r\n" * self.crlfs + data[:end])
        self.content = True
        self.crlfs = trailing

    def end(self, empty_as_nothing: bool) -> None:
        if self.cr:  # a final lone CR is content
            self.emit(b"\r\n" * self.crlfs + self.cr)
            self.cr, self.content, self.crlfs = b"", True, 0
        if self.content or not empty_as_nothing:
            self.emit(b"\r\n")


def _relaxed_blanks(data: bytes) -> bytes:
    """Every run of SP and TAB as one SP, and none before a CRLF (`data` never ends inside a run).

    bytes.replace, not a regular expression: C speed on text (Python's re ran 25-65 MB/s on
    prose, 1.6 GB/s this way); each pass halves every run, so a run of n blanks takes log2(n).
    """
    if b"\t" in data:
        data = data.replace(b"\t", b" ")
    elif b" " not in data:  # base64 and other encoded parts: one memchr, nothing to change
        return data
    while b"  " in data:
        data = data.replace(b"  ", b" ")
    return data.replace(b" \r\n", b"\r\n")


class _Canonical:
    """One body canonicalization, streamed into `emit`."""

    def __init__(self, name: bytes, emit: Callable[[bytes], None]):
        self.relaxed = name == b"relaxed"
        self.trailing = _TrailingLines(emit)
        self.held = b""  # relaxed: trailing white space and CR of the last chunk

    def feed(self, data: bytes) -> None:
        if not self.relaxed:
            self.trailing.feed(data)
            return
        if self.held:
            data = self.held + data
        cut = len(data) - 1 if data.endswith(b"\r") else len(data)
        while cut and data[cut - 1] in _BLANKS:
            cut -= 1
        data, self.held = data[:cut], data[cut:]
        data = _relaxed_blanks(data)
        if data:
            self.trailing.feed(data)

    def end(self) -> None:
        if self.held:
            self.trailing.feed(_relaxed_blanks(self.held))  # no CRLF follows: a run becomes one SP
            self.held = b""
        self.trailing.end(empty_as_nothing=self.relaxed)


class _Hash:
    """One hasher fed at most `limit` octets."""

    def __init__(self, algorithm: bytes, limit: int | None):
        self.hasher: Any = dkim.HASH_ALGORITHMS[algorithm]()
        self.left = limit

    def feed(self, data: bytes) -> None:
        if self.left is None:
            self.hasher.update(data)
        elif self.left > 0:
            part = data[: self.left]
            self.hasher.update(part)
            self.left -= len(part)


def digests(body: Iterable[bytes], keys: Iterable[BodyKey], lengths: dict[bytes, int] | None = None
            ) -> dict[BodyKey, bytes]:  # fmt: skip
    """The body hash of each key (an unknown a= or c= is left out), reading `body` once.

    `lengths`, when given, receives the length of the whole canonical body by
    canonicalization (what an l= is compared with).
    """
    hashes: dict[BodyKey, _Hash] = {}
    for key in keys:
        if key[1] in dkim.HASH_ALGORITHMS and key[0] in (b"simple", b"relaxed"):
            hashes.setdefault(key, _Hash(key[1], key[2]))
    if not hashes:
        return {}
    stages: list[_Canonical] = []
    for name in sorted({key[0] for key in hashes}):
        feeders = [h.feed for k, h in hashes.items() if k[0] == name]
        if lengths is not None:
            lengths[name] = 0
            feeders.append(functools.partial(_count, lengths, name))
        stages.append(_Canonical(name, _fan_out(feeders)))
    for chunk in body:
        if chunk:
            for stage in stages:
                stage.feed(chunk)
    for stage in stages:
        stage.end()
    return {key: h.hasher.digest() for key, h in hashes.items()}


def _count(lengths: dict[bytes, int], name: bytes, data: bytes) -> None:
    lengths[name] += len(data)


def _fan_out(feeders: Sequence[Callable[[bytes], None]]) -> Callable[[bytes], None]:
    if len(feeders) == 1:
        return feeders[0]

    def emit(data: bytes) -> None:
        for feed in feeders:
            feed(data)

    return emit


def split(chunks: Iterable[bytes], *, crlf: bool = False) -> tuple[bytes, Iterator[bytes]]:
    """(header block, body chunks) of a raw message, line ends as dkimpy makes them (CRLF).

    The header block ends with the CRLF of its last field, so dkimpy reads the same
    fields from `header + b"\\r\\n"` as from the whole message. The body starts after
    the first empty line (none: an empty body), and is read from `chunks` only as the
    returned iterator is. `crlf=True` when every line of `chunks` already ends in CRLF
    (a transaction's spool: Transaction.crlf): the same result without looking for bare LFs.
    """
    lines = _Lines(crlf)
    source = iter(chunks)
    head = bytearray()
    for chunk in source:
        start = max(len(head) - 3, 0)
        head += lines.feed(chunk)
        if head.startswith(b"\r\n"):  # an empty first line: no header fields
            return b"", _body(bytes(head[2:]), source, lines)
        found = head.find(b"\r\n\r\n", start)
        if found >= 0:
            return bytes(head[: found + 2]), _body(bytes(head[found + 4 :]), source, lines)
    head += lines.end()
    if head.startswith(b"\r\n"):
        return b"", iter([bytes(head[2:])])
    if head and not head.endswith(b"\r\n"):
        head += b"\r\n"
    return bytes(head), iter(())


def _body(first: bytes, source: Iterator[bytes], lines: _Lines) -> Iterator[bytes]:
    yield first
    for chunk in source:
        yield lines.feed(chunk)
    yield lines.end()
