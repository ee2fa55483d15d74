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

    def text(self) -> str:
        parts = [f"{self.method}={self.result}"]
        if self.reason:
            reason = _UNSAFE.sub("?", self.reason)[:120].replace("\\", "\\\\").replace('"', "'")
            parts.append(f'reason="{reason}"')
        parts += [f"{name}={value_text(value)}" for name, value in self.properties if value]
        return " ".join(parts)


def value_text(value: str) -> str:
    """A property value as the header writes it: bare when it is a token, else quoted."""
    if _TOKEN.match(value):
        return value
    return '"' + _UNSAFE.sub("?", value)[:255].replace("\\", "\\\\").replace('"', "'") + '"'


def header_value(authserv_id: str, results: Sequence[MethodResult]) -> str:
    """The value of one Authentication-Results field: `authserv-id; method=result ...; ...`."""
    if not results:
        return f"{authserv_id}; none"
    # one line: the milter adds header values as they are (a fold would need the protocol's help)
    return f"{authserv_id}; " + "; ".join(r.text() for r in results)


def claims(value: str, authserv_id: str) -> bool:
    """True when an Authentication-Results value names `authserv_id` as its author (a forgery if incoming)."""
    head = value.split(";", 1)[0]
    head = re.sub(r"\([^()]*\)", " ", head).strip()  # a comment may stand around the id
    first = head.split()[0] if head.split() else ""
    return first.lower().rstrip(".") == authserv_id.lower().rstrip(".")
