"""Authentication results as values, and the Authentication-Results header (RFC 8601) that carries them."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

PASS = "pass"  # noqa: S105 - a result name, not a password
FAIL = "fail"
SOFTFAIL = "softfail"
NEUTRAL = "neutral"
NONE = "none"
TEMPERROR = "temperror"
PERMERROR = "permerror"
POLICY = "policy"  # DKIM: a signature that verified but that local policy does not accept (too weak a key)

METHODS = ("spf", "dkim", "dmarc", "arc")
LINE = 78  # RFC 5322 2.1.1: the length a header line SHOULD stay within (the fold's tab counted as one)

# what may stand in a property value of the header without quoting (RFC 8601 2.2: a dot-atom or a quoted string)
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.@-]{1,255}$")
_UNSAFE = re.compile(r"[^\x20-\x7e]")


@dataclass(frozen=True)
class MethodResult:
    """One method's result: `spf=pass smtp.mailfrom=example.com`."""

    method: str  # spf | dkim | dmarc | arc
    result: str  # pass | fail | softfail | neutral | none | temperror | permerror | policy
    properties: tuple[tuple[str, str], ...] = ()  # ("smtp.mailfrom", "example.com"), ("header.d", ...)
    reason: str = ""  # for people: why (a short text, ASCII)

    def tokens(self) -> list[str]:
        """`method=result`, `reason="..."`, `ptype.property=value`: the places a long line may fold between."""
        parts = [f"{self.method}={self.result}"]
        if self.reason:
            reason = _UNSAFE.sub("?", self.reason)[:120].replace("\\", "\\\\").replace('"', "'")
            parts.append(f'reason="{reason}"')
        parts += [f"{name}={value_text(value)}" for name, value in self.properties if value]
        return parts

    def text(self) -> str:
        return " ".join(self.tokens())


def value_text(value: str) -> str:
    """A property value as the header writes it: bare when it is a token, else quoted."""
    if _TOKEN.match(value):
        return value
    return '"' + _UNSAFE.sub("?", value)[:255].replace("\\", "\\\\").replace('"', "'") + '"'


def header_value(authserv_id: str, results: Sequence[MethodResult], name: str = "Authentication-Results") -> str:
    """The value of one Authentication-Results field: `authserv-id; method=result ...; ...`, folded.

    RFC 5322 2.1.1: a line SHOULD stay within 78 characters and MUST within 998; a message
    with several DKIM signatures and their reasons passes both on one line. The value is
    folded ("\\n\\t": libmilter's smfi_addheader takes a fold as a newline followed by
    white space, and Postfix writes it as CRLF TAB) between results, and inside a result
    between its properties when that result alone is longer than a line. Every piece is
    bounded (a reason 120 characters, a property value 255, escaped), so no line reaches 998.
    """
    if not results:
        return f"{authserv_id}; none"
    lines: list[str] = []
    line = f"{authserv_id};"
    width = len(name) + 2 + len(line)  # "Name: " precedes the value on the first line
    for index, result in enumerate(results):
        tokens = result.tokens()
        if index < len(results) - 1:
            tokens[-1] += ";"
        whole = " ".join(tokens)
        if width + 1 + len(whole) <= LINE:
            line, width = f"{line} {whole}", width + 1 + len(whole)
            continue
        if 1 + len(whole) <= LINE:  # the result fits on a line of its own
            lines.append(line)
            line, width = whole, 1 + len(whole)
            continue
        for token in tokens:  # a long result: folded between its own tokens
            if width + 1 + len(token) <= LINE:
                line, width = f"{line} {token}", width + 1 + len(token)
            else:
                lines.append(line)
                line, width = token, 1 + len(token)
    lines.append(line)
    return "\n\t".join(lines)


def claims(value: str, authserv_id: str) -> bool:
    """True when an Authentication-Results value names `authserv_id` as its author (a forgery if incoming).

    RFC 8601 2.2: the value starts with the authserv-id, a token or a quoted-string, which
    comments (nested, holding ";" or a quoted-pair) and folding white space may surround,
    and which a version may follow. Compared without case and without a final dot.
    """
    return _authserv_id(value).lower().rstrip(".") == authserv_id.lower().rstrip(".")


def _authserv_id(value: str) -> str:
    """The authserv-id that starts an Authentication-Results value ("" when there is none)."""
    index, size, depth = 0, len(value), 0
    while index < size:  # comments and white space before it
        char = value[index]
        if char == "\\" and depth:
            index += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif not depth and char not in " \t\r\n":
            break
        index += 1
    if index < size and value[index] == '"':  # a quoted-string: its content, quoted-pairs undone
        found: list[str] = []
        index += 1
        while index < size and value[index] != '"':
            if value[index] == "\\" and index + 1 < size:
                index += 1
            found.append(value[index])
            index += 1
        return "".join(found) if index < size else ""
    end = index
    while end < size and value[end] not in ' \t\r\n;()"':
        end += 1
    return value[index:end]
