"""Conditions of content rules that need no regular expression.

The envelope sender's domain, the From header's domain and the domains of the message's
links, each compared with a list of names: `"gov.vn"` holds for gov.vn and every name
under it (label boundary: `evilgov.vn` is not under gov.vn), `"=gov.vn"` for that name
only. The `_not` form holds when the domain is none of them. `authenticated` holds when
the sender did (or did not) log in with SMTP AUTH. Every condition of a rule must hold.
"""

from __future__ import annotations

import email.utils
from collections.abc import Sequence
from dataclasses import dataclass

from govmilter.domains import domain_of, is_under, normalize_domain
from govmilter.model import Transaction
from govmilter.text.links import Link
from govmilter.text.normalize import decode_header_value

DOMAIN_KEYS = ("sender_domain", "sender_domain_not", "from_domain", "from_domain_not", "link_domain", "link_domain_not")


@dataclass(frozen=True)
class DomainList:
    under: tuple[str, ...] = ()  # the name or a name below it
    exact: tuple[str, ...] = ()  # that name only
    negated: bool = False  # holds when the domain is none of them

    def holds(self, domain: str) -> bool:
        found = bool(domain) and (domain in self.exact or any(is_under(domain, name) for name in self.under))
        return found != self.negated


def domain_list(values: Sequence[str], negated: bool) -> tuple[DomainList, list[str]]:
    """The compiled list and the items that are not domain names."""
    under: list[str] = []
    exact: list[str] = []
    bad: list[str] = []
    for value in values:
        raw = value.strip()
        target = exact if raw.startswith("=") else under
        name = normalize_domain(raw.removeprefix("=").lstrip("@").strip())
        if not name or "/" in name or ":" in name:
            bad.append(value)
        else:
            target.append(name)
    return DomainList(tuple(under), tuple(exact), negated), bad


@dataclass(frozen=True)
class Conditions:
    sender: tuple[DomainList, ...] = ()  # sender_domain, sender_domain_not
    from_: tuple[DomainList, ...] = ()  # from_domain, from_domain_not
    link: tuple[DomainList, ...] = ()  # link_domain, link_domain_not
    authenticated: bool | None = None

    @property
    def any(self) -> bool:
        return bool(self.sender or self.from_ or self.link) or self.authenticated is not None

    def envelope_holds(self, tx: Transaction, from_domains: Sequence[str]) -> bool:
        """The conditions on the sender, the From domain and authentication."""
        if self.authenticated is not None and self.authenticated != bool(tx.envelope.auth_user):
            return False
        if self.sender:
            sender = domain_of(tx.envelope.mail_from) if tx.envelope.mail_from else ""
            if not all(test.holds(sender) for test in self.sender):
                return False
        return all(any(test.holds(d) for d in from_domains) for test in self.from_)

    def link_holds(self, link: Link) -> bool:
        return all(test.holds(link.host) for test in self.link)


NONE = Conditions()


def from_domains(tx: Transaction) -> tuple[str, ...]:
    """The domains of the From header's addresses ("" when it has none)."""
    values = [decode_header_value(v) for v in tx.header("From")]
    found = [domain_of(address) for _, address in email.utils.getaddresses(values) if "@" in address]
    return tuple(dict.fromkeys(found)) or ("",)
