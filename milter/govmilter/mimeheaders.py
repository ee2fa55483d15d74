"""The few MIME header fields the walk needs, parsed from one entity's header block.

Content-Type, Content-Disposition and Content-Transfer-Encoding, with their
parameters: quoted strings, RFC 2231 continuations and charsets
(`filename*0*=utf-8''...`), and RFC 2047 encoded words in file names
(`name="=?UTF-8?B?...?="`, as Outlook writes them). Bad values give a
defined result (the RFC 2045 defaults) and a defect name, never an exception.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from email.errors import MessageError
from email.header import decode_header, make_header
from urllib.parse import unquote_to_bytes

_TOKEN_TYPE = re.compile(r"^[!#$%&'*+.^_`|~0-9a-z-]+/[!#$%&'*+.^_`|~0-9a-z-]+$")
_SECTION = re.compile(r"^([^*]+)\*(?:(\d{1,3})(\*)?|)$")  # name*, name*0, name*0*
_MAX_PARAMS = 64
_MAX_SECTIONS = 64


@dataclass(frozen=True)
class EntityHeaders:
    content_type: str = "text/plain"  # lower-case
    params: tuple[tuple[str, str], ...] = ()  # Content-Type parameters, names lower-case
    disposition: str = ""  # "attachment", "inline" or ""
    filename: str = ""
    transfer_encoding: str = ""  # lower-case, "" when absent
    defects: tuple[str, ...] = ()

    def param(self, name: str) -> str:
        for key, value in self.params:
            if key == name:
                return value
        return ""

    @property
    def boundary(self) -> str:
        return self.param("boundary")

    @property
    def charset(self) -> str:
        return self.param("charset").strip().lower()


def parse_entity(block: bytes, default_type: str = "text/plain") -> EntityHeaders:
    """Read the header block of one MIME entity (the bytes before its empty line)."""
    fields = unfold(block)
    defects: list[str] = []
    content_type = default_type
    params: list[tuple[str, str]] = []
    raw_type = fields.get("content-type")
    if raw_type is not None:
        value, params = parse_parameters(raw_type)
        value = value.lower()
        if _TOKEN_TYPE.match(value):
            content_type = value
        else:
            # RFC 2045 says text/plain; a part we cannot type is counted as a file instead
            content_type = "application/octet-stream"
            defects.append("bad-content-type")
    disposition = ""
    disposition_params: list[tuple[str, str]] = []
    raw_disposition = fields.get("content-disposition")
    if raw_disposition is not None:
        disposition, disposition_params = parse_parameters(raw_disposition)
        disposition = disposition.lower()
    filename = _first(disposition_params, "filename") or _first(params, "name")
    encoding = fields.get("content-transfer-encoding", "").strip().lower()
    return EntityHeaders(content_type, tuple(params), disposition, filename, encoding, tuple(defects))


def unfold(block: bytes) -> dict[str, str]:
    """The first value of each field, unfolded; names lower-case. UTF-8 is allowed (RFC 6532)."""
    fields: dict[str, str] = {}
    name = ""
    value: list[str] = []
    for raw in block.split(b"\n"):
        line = raw.rstrip(b"\r").decode("utf-8", "replace")
        if line[:1] in (" ", "\t") and name:
            value.append(line)
            continue
        if name and name not in fields:
            fields[name] = "".join(value).strip()
        key, colon, rest = line.partition(":")
        name = key.strip().lower() if colon else ""
        value = [rest]
    if name and name not in fields:
        fields[name] = "".join(value).strip()
    return fields


def parse_parameters(value: str) -> tuple[str, list[tuple[str, str]]]:
    """`main; a=1; b="x y"` -> ("main", [("a", "1"), ("b", "x y")]) with RFC 2231 applied."""
    pieces = _split(value)
    main = pieces[0].strip() if pieces else ""
    plain: dict[str, str] = {}
    sections: dict[str, dict[int, tuple[str, bool]]] = {}
    for piece in pieces[1 : 1 + _MAX_PARAMS]:
        key, eq, raw = piece.partition("=")
        key = key.strip().lower()
        if not eq or not key:
            continue
        raw = raw.strip()
        text = _unquote(raw) if raw.startswith('"') else raw
        match = _SECTION.match(key)
        if match is None:
            plain.setdefault(key, text)
            continue
        name, number, star = match.groups()
        if number is None:  # name*=charset'lang'value
            sections.setdefault(name, {})[0] = (text, True)
        elif len(sections.setdefault(name, {})) < _MAX_SECTIONS:
            sections[name][int(number)] = (text, bool(star))
    result = {key: _decode_words(text) for key, text in plain.items()}
    for name, parts in sections.items():
        result[name] = _join_sections(parts)  # the extended form wins
    return main, list(result.items())


def _split(value: str) -> list[str]:
    """Split on semicolons outside quoted strings."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = False
    escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            pieces.append("".join(current))
            current = []
            continue
        current.append(char)
    pieces.append("".join(current))
    return pieces


def _unquote(raw: str) -> str:
    body = raw[1:-1] if len(raw) >= 2 and raw.endswith('"') else raw[1:]
    return re.sub(r"\\(.)", r"\1", body)


def _join_sections(parts: dict[int, tuple[str, bool]]) -> str:
    charset = "utf-8"
    data = bytearray()
    for number in sorted(parts):
        text, encoded = parts[number]
        if encoded:
            if number == 0 and text.count("'") >= 2:
                charset, _, text = text.split("'", 2)
            data += unquote_to_bytes(text)
        else:
            data += text.encode("utf-8", "replace")
    return decode_bytes(bytes(data), charset)


def decode_bytes(data: bytes, charset: str) -> str:
    """Decode with a declared charset; unknown or non-text codecs fall back to UTF-8."""
    return data.decode(text_codec(charset) or "utf-8", "replace")


def text_codec(charset: str) -> str:
    """The codec name for a charset label, or "" if Python has no text codec of that name."""
    label = charset.strip().strip('"').lower()
    if not label:
        return ""
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError):
        return ""
    # base64_codec, rot13 and the like are codecs too, but not text encodings
    if not getattr(info, "_is_text_encoding", True):
        return ""
    return info.name


def _decode_words(text: str) -> str:
    if "=?" not in text:
        return text
    try:
        return str(make_header(decode_header(text)))
    # CharsetError (a MessageError): a charset label that is not ASCII, "=?\xffutf-8?B?...?="
    except (ValueError, LookupError, UnicodeError, AssertionError, MessageError):
        return text


def _first(params: list[tuple[str, str]], name: str) -> str:
    for key, value in params:
        if key == name:
            return value
    return ""
