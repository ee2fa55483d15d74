"""Domain classes for the forwarding rule: local, government, everything else.

The registered domain of a name (what a registrant holds, `registered_domain`) comes from
the Public Suffix List bundled with the `publicsuffixlist` package: no download at run time,
the list of the pinned version (pyproject.toml). A domain belongs to a configured name when
it is that name or lies under it on a label boundary: `evilgov.vn` is not under `gov.vn`, `gov.vn.evil.com` is not
either, `GOV.VN.` is `gov.vn`. Names are compared IDNA-normalised (A-labels,
lower case, no trailing dot), so a Unicode spelling and its punycode agree.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable
from dataclasses import dataclass

from publicsuffixlist import PublicSuffixList

# Dots that IDNA treats as label separators (RFC 3490 section 3.1).
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
_MAX_DOMAIN = 253


class DomainClass(enum.Enum):
    LOCAL = "local"  # a domain this gateway delivers for
    GOVERNMENT = "government"  # gov.vn and below, plus the configured list
    OTHER = "other"

    @property
    def government(self) -> bool:
        """Local domains are government domains too: they are the state body's own."""
        return self is not DomainClass.OTHER


@functools.cache  # read once per process, on first use (about 50 ms), not at import
def _suffixes() -> PublicSuffixList:
    # ICANN and private sections both: a name under a hosting suffix (github.io, blogspot.com) is
    # its own registrant's, which is the level blocklists list it at.
    return PublicSuffixList()


@functools.lru_cache(maxsize=4096)
def registered_domain(host: str) -> str:
    """The name a registrant holds, from the Public Suffix List: `a.b.shop.com.vn` -> `shop.com.vn`,
    `x.hanoi.gov.vn` -> `hanoi.gov.vn` (gov.vn is a public suffix: each province registers its own).

    `host` is a normalised name (normalize_domain); a public suffix itself (`gov.vn`, `io.vn`) or a
    name outside the list's view is returned as it is.
    """
    return _suffixes().privatesuffix(host) or host


@functools.lru_cache(maxsize=4096)  # a pure function of names that recur on every message
def normalize_domain(domain: str) -> str:
    """The comparable form of a domain: A-labels, lower case, no trailing dot.

    Returns "" for something that is not a domain name (empty labels, an
    address literal, an over-long name): it then belongs to no configured name.
    """
    name = domain.strip().translate(_DOTS)
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > _MAX_DOMAIN * 4 or name.startswith("["):
        return ""
    labels = []
    for label in name.split("."):
        if not label:
            return ""
        if label.isascii():
            labels.append(label.lower())
            continue
        try:
            labels.append(label.encode("idna").decode("ascii").lower())
        except UnicodeError:
            return ""  # not a valid IDN label: matches nothing configured
    result = ".".join(labels)
    # spaces and control characters are in no domain name (nameprep can leave a CR behind)
    if len(result) > _MAX_DOMAIN or any(c <= " " or c == "\x7f" for c in result):
        return ""
    return result


def is_under(domain: str, parent: str) -> bool:
    """Whether a normalised domain is `parent` or a name below it (label boundary)."""
    return bool(domain) and bool(parent) and (domain == parent or domain.endswith("." + parent))


def split_address(address: str) -> tuple[str, str]:
    """(local part, domain) of an envelope or header address; domain "" when there is none.

    Angle brackets and an RFC 5321 source route (`@a,@b:user@dom`) are removed;
    the last `@` separates the domain, so a quoted local part may hold one.
    """
    value = address.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1].strip()
    if value.startswith("@") and ":" in value:
        value = value.split(":", 1)[1]
    local, at, domain = value.rpartition("@")
    if not at:
        return value, ""
    return local, domain


def normalize_address(address: str) -> str:
    """`local@domain` lower-cased with the domain normalised; "" for the null sender."""
    local, domain = split_address(address)
    if not local and not domain:
        return ""
    norm = normalize_domain(domain) if domain else ""
    return f"{local.lower()}@{norm or domain.strip().lower()}" if domain else local.lower()


def domain_of(address: str) -> str:
    """The normalised domain of an address, or the normalised name itself when no `@`."""
    local, domain = split_address(address)
    return normalize_domain(domain if domain else local)


@dataclass(frozen=True)
class Domains:
    """The configured local and government names, normalised once."""

    local: tuple[str, ...]
    government: tuple[str, ...]

    @classmethod
    def from_names(cls, local: Iterable[str], government: Iterable[str]) -> Domains:
        def norm(names: Iterable[str]) -> tuple[str, ...]:
            found = []
            for name in names:
                value = normalize_domain(name.lstrip("@").lstrip("*").lstrip("."))
                if not value:
                    raise ValueError(f"not a domain name: {name!r}")
                found.append(value)
            return tuple(dict.fromkeys(found))

        return cls(norm(local), norm(government))

    def classify_domain(self, domain: str) -> DomainClass:
        name = normalize_domain(domain)
        if any(is_under(name, parent) for parent in self.local):
            return DomainClass.LOCAL
        if any(is_under(name, parent) for parent in self.government):
            return DomainClass.GOVERNMENT
        return DomainClass.OTHER

    def classify(self, address: str) -> DomainClass:
        """The class of an address (or of a bare domain)."""
        local, domain = split_address(address)
        return self.classify_domain(domain if domain else local)

    def is_local(self, address: str) -> bool:
        return self.classify(address) is DomainClass.LOCAL

    def is_government(self, address: str) -> bool:
        return self.classify(address).government
