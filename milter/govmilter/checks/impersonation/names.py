"""Look-alike names: what a host name looks like, and which protected name it imitates.

A name is first put in the form DNS compares (domains.normalize_domain: IDN dots, upper
case, a trailing dot, Unicode to A-labels; nameprep also drops zero-width characters).
Its *skeleton* is what a reader sees: the A-labels decoded back to Unicode, NFKC, the
default-ignorable characters removed, the marks of letters removed (`bắc` -> `bac`), and
every character that Unicode's confusables data (UTS #39 confusables.txt, as shipped in
the PyPI package confusable-homoglyphs 3.3.1, pinned in pyproject.toml) lists as
looking like one ASCII letter or digit replaced by it (Cyrillic `о` -> `o`); `0` reads
`o` and `1` reads `l`. Nothing is downloaded at run time.

The shapes, strongest first (`Protected.judge`):
- prefix: the name holds a protected name as whole labels and goes on after it
  (`bacninh.gov.vn.com`, `gdt.gov.vn.tax-notice.com`);
- confusable: the skeleton is a protected name, lies under one or under a government
  name, while the name itself does not (`gdt.gоv.vn` with a Cyrillic о);
- gov-join: the registered domain (Public Suffix List), separators removed, joins a
  protected body's name to "gov" (`bacninh-gov.vn`, `gdt-gov.info`);
- near: the registered domain's first label is within an edit distance of a protected
  body's name (`bacnlnh.com`, `chinh-phu.vn`); bodies of fewer than 5 letters only by their
  very name on another .vn domain (`gdt.com.vn`, `mof.vn`).
A name that is a protected name or lies under one (or under a government name) is none
of them: gov.vn names are registered by the state only.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import threading
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

from govmilter.domains import is_under, normalize_domain, registered_domain

_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
_ASCII_LOOKS = str.maketrans({"0": "o", "1": "l"})
_NOT_ALNUM = re.compile(r"[^a-z0-9]")
MIN_BODY = 5  # a body name shorter than this has no near misses (too many honest names are near "gdt")
MIN_EXACT = 3  # a shorter body's own name on another .vn registered domain is still a near miss (gdt.vn, mof.com.vn)
CACHE_ENTRIES = 4096  # judged names kept per protected set


@functools.cache
def confusable_table() -> dict[int, str]:
    """Each character confusables.txt shows as one ASCII letter or digit -> that character, lower case."""
    data = json.loads(resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text("utf-8"))
    table: dict[int, str] = {}
    for char, looks in data.items():
        if len(char) != 1 or char.isascii():
            continue
        for look in looks:
            target = look.get("c", "")
            if len(target) == 1 and target.isascii() and target.isalnum():
                table[ord(char)] = target.lower()
                break
    return table


def _ignorable(char: str) -> bool:
    return unicodedata.category(char) == "Cf" or 0xFE00 <= ord(char) <= 0xFE0F or ord(char) in (0x034F, 0x3164)


def unicode_form(ascii_name: str) -> str:
    """A normalised name with its A-labels decoded (`xn--gv-...` -> `gоv`); a label that does not decode stays."""
    if "xn--" not in ascii_name:
        return ascii_name
    labels = []
    for label in ascii_name.split("."):
        if label.startswith("xn--"):
            with contextlib.suppress(UnicodeError):
                label = label.encode("ascii").decode("idna")
        labels.append(label)
    return ".".join(labels)


@functools.lru_cache(maxsize=CACHE_ENTRIES)
def skeleton(name: str) -> str:
    """What a reader sees of a name: lower-case ASCII where a look-alike is known (see the module docstring)."""
    text = unicodedata.normalize("NFKC", unicode_form(name).translate(_DOTS)).lower()
    if not text.isascii():
        decomposed = unicodedata.normalize("NFD", text)
        text = "".join(c for c in decomposed if not unicodedata.combining(c) and not _ignorable(c))
        text = text.replace("đ", "d").translate(confusable_table())
        text = unicodedata.normalize("NFC", text)
    return text.translate(_ASCII_LOOKS).rstrip(".")


def body_of(domain: str) -> str:
    """The name a body registered, without separators: `bacninh.gov.vn` -> `bacninh`; "" for a bare suffix."""
    if "." not in domain or registered_domain("x." + domain) == "x." + domain:  # gov.vn, com.vn: a public suffix
        return ""
    return _NOT_ALNUM.sub("", registered_domain(domain).split(".", 1)[0])


def distance(a: str, b: str, limit: int) -> int:
    """Levenshtein distance of a and b, or limit + 1 once it is known to exceed limit."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        best = current[0]
        for j, cb in enumerate(b, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb))
            best = min(best, current[j])
        if best > limit:
            return limit + 1
        previous = current
    return previous[-1]


@dataclass(frozen=True)
class Lookalike:
    shape: str  # prefix | confusable | gov-join | near
    protected: str  # the protected name imitated (from the configuration or the rule file)


class Protected:
    """The protected names (local, government, the rule file's state bodies) and the look-alike judge."""

    def __init__(self, names: Iterable[str], governments: Iterable[str], near_distance: int, source: object = None):
        self.source = source  # what the names were built from (the compiled rules): a new rule set, a new judge
        self.names = tuple(dict.fromkeys(n for n in names if n))
        self.governments = tuple(dict.fromkeys(n for n in governments if n))  # gov.vn: everything under is the state's
        self.near_distance = near_distance
        self.bodies = tuple((body, name) for name in self.names for body in [body_of(name)] if body)
        # a body's name, then gov and vn as labels or joined, inside a longer name: bacninh.gov-vn.com, gdt.govvn.info
        self._body_gov_vn = re.compile(
            r"(?:^|[.-])(" + "|".join(dict.fromkeys(b for b, _ in self.bodies)) + r")[.-]?gov[.-]?vn(?:[.-]|$)"
        ) if self.bodies else None  # fmt: skip
        self._cache: dict[str, Lookalike | None] = {}
        self._lock = threading.Lock()

    def owner(self, domain: str) -> str:
        """The protected or government name a normalised domain is or lies under; "" when none."""
        for name in self.names:
            if is_under(domain, name):
                return name
        for name in self.governments:
            if is_under(domain, name):
                return name
        return ""

    def judge(self, raw: str) -> Lookalike | None:
        """The look-alike shape of a host name as written (any spelling), or None."""
        # a name IDNA refuses (a bidi mark, a stray symbol) still shows as text to the reader: judged as written
        valid = normalize_domain(raw)
        name = valid or raw.strip().lower()
        if not name or len(name) > 1024 or any(c.isspace() for c in name):
            return None
        if name in self._cache:
            return self._cache[name]
        result = self._judge(name, bool(valid))
        with self._lock:
            if len(self._cache) >= CACHE_ENTRIES:
                self._cache.clear()
            self._cache[name] = result
        return result

    def _judge(self, name: str, valid: bool) -> Lookalike | None:
        if valid and self.owner(name):  # a name DNS cannot hold is nobody's, whatever it ends with
            return None
        seen = skeleton(name)
        dotted = f".{seen}."
        for protected in (*self.names, *self.governments):
            if f".{protected}." in dotted and not seen.endswith("." + protected) and seen != protected:
                return Lookalike("prefix", protected)
            if f".{protected}-" in dotted:  # goes on past the label's edge: gov.vn-thue.com, bacninh.gov.vn-x.com
                return Lookalike("prefix", protected)
        if seen != name:
            owner = self.owner(seen)
            if owner:
                return Lookalike("confusable", owner)
        registered = registered_domain(seen) if seen.isascii() else seen
        compact = _NOT_ALNUM.sub("", registered)
        for body, protected in self.bodies:
            if body + "gov" in compact or "gov" + body in compact:
                return Lookalike("gov-join", protected)
        joined = self._body_gov_vn.search(seen) if self._body_gov_vn is not None else None
        if joined is not None:
            return Lookalike("gov-join", next(p for b, p in self.bodies if b == joined.group(1)))
        if not self.near_distance:
            return None
        first = _NOT_ALNUM.sub("", registered.split(".", 1)[0])
        for body, protected in self.bodies:
            if len(body) < MIN_BODY:
                # the very name on another Vietnamese suffix (gdt.com.vn, mof.vn); elsewhere a short name is
                # too often someone's own (gdt.com)
                if first == body and len(body) >= MIN_EXACT and registered.endswith(".vn"):
                    return Lookalike("near", protected)
                continue
            limit = self.near_distance if len(body) >= 8 else 1
            if distance(first, body, limit) <= limit:
                return Lookalike("near", protected)
        return None
