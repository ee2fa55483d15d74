"""The `impersonation` check: mail that poses as the state (docs/impersonation.md).

It runs at end of message, after `auth` (whose results it reads from
tx.scratch[model.AUTH_SUMMARY_KEY], never by importing it) and before `content`,
which adds the scores of its hits to the spam score. Mail from trusted relays and
authenticated users (the outbound side) is not judged, nor mail of an allowed outside
sender (the rule file's [[allow]]).

What it finds (each a `finding` the rule file maps to reject or score):
- spoofed-local / spoofed-government: a From address of a local, government or protected
  domain that the message is not authenticated for (DMARC pass for that domain, or with
  no DMARC record an aligned SPF or DKIM pass). A DNS failure of that domain never
  refuses; a temperror that is the message's budget spent elsewhere gets a second look
  (_dns_excuse); while our resolver is paused a refusal becomes a 451. Every address of
  the From fields (read up to FIELD_CHARS) is judged.
- lookalike-*: From, Reply-To and Sender addresses (the first MAX_HOSTS domains of each),
  the envelope sender and the link hosts, compared with the protected names (names.py).
- display-name: the display name of a From address names a state body or holds a
  government address, and the address is not a government one.
- link-*: a link that shows another domain than its target (an HTML link's text, a URL's
  user part), links to IP addresses, to URL shorteners, HTML links to data: URLs.
- reply-diversion: From is a government address and a Reply-To address is not.

No message that passed DMARC (or aligned SPF/DKIM) for a government domain in From is
refused here: its refusals become scores. The reply names the impersonated domain in
Vietnamese without diacritics and English, citing Dieu 10.2.c.
"""

from __future__ import annotations

import email.utils
import html
import itertools
import re
import unicodedata
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from govmilter.checks import CheckHooks
from govmilter.checks.impersonation.names import Protected, confusable_table
from govmilter.checks.impersonation.rules import (
    RULE_KIND,
    SCHEMA,
    ImpersonationRule,
    ImpersonationRules,
    compile_rules,
)
from govmilter.clients.dns import FAILED, FOUND, SKIPPED, Budget, DnsClient, Resolver, shared_client
from govmilter.config import Config, ImpersonationConfig
from govmilter.domains import Domains, normalize_domain, registered_domain, split_address
from govmilter.metrics import Metrics
from govmilter.model import AUTH_SUMMARY_KEY, Action, AuthSummary, Stage, Transaction, Verdict
from govmilter.text.links import (
    URL_HOST,
    URL_LIMIT,
    Link,
    anchor_text,
    distinct_links,
    ip_host,
    message_links,
    normal_domain,
)
from govmilter.text.normalize import decode_header_value, normalize

__all__ = ["RULE_KIND", "SCHEMA", "ImpersonationCheck", "build", "compile_rules"]

_REPLY_DOMAIN = re.compile(r"^[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?$")
# a bare name as link text, with or without a path: `mail.gov.vn`, `stc.bacninh.gov.vn/vanban`
_BARE_DOMAIN = re.compile(r"^((?:[^\s/@:<>\"']+\.)+[^\s/@:<>\"'.\d][^\s/@:<>\"'.]*)(?:[/?#:]\S*)?$")
_DOMAIN_IN_TEXT = re.compile(r"(?<![\w.-])[\w.-]+\.[a-z]{2,}", re.I)  # from a run's start: linear
# each starts where a run of address characters starts (a lookbehind): linear on a field of 100 000 letters
_ADDRESS_IN_TEXT = re.compile(r"""(?<![^\s<>,;:"()\[\]@])[^\s<>,;:"()\[\]@]+@[^\s<>,;"()\[\]@]+""")
_TLD = re.compile(r"^(?:[^\W\d_]{2,63}|xn--[a-z0-9-]{1,59})$", re.I)  # "e.g." shows no domain
_HREF = re.compile(r"\bhref\s*=", re.I)
_HREF_LEAD = re.compile(r"""\s*["']?""")
_UNQUOTED_END = re.compile(r"[\s>]")
_PLAIN_URL = re.compile(r"(?:https?|ftp)://", re.I)  # what text/links.py reads (entities decoded)
# what a browser reads as an http(s) or ftp URL (backslashes already turned into slashes): its host
_LOOSE_URL = re.compile(r"(?:(?:https?|ftp):/*|//)(?:[^/?#@\s]*@)?([^/?#:\s]+)", re.I)
_DATA_VALUE = re.compile(r"""\s*["']?[\x00-\x20]*data:""", re.I)
_URL_NOISE = str.maketrans("", "", "\t\n\r")  # browsers drop tabs and line breaks anywhere in a URL
_USER_INFO = re.compile(r"(?:https?|ftp)://([^\s/\\?#@<>\"']*)@", re.I)
_GROUP = re.compile(r"""^\s*([^:"<>@,;()\\]+):(?!:)""")
_SPACED_DOT = re.compile(r"\s*\.\s*")
RECHECK_SECONDS = 1.0  # at most this (and [dns] budget) for a second look at a policy auth could not read
MAX_SHOWN = 20  # names of one link text judged
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
FIELD_CHARS = 16384  # characters of the From (or Reply-To, Sender) fields read, all fields of that name together
MAX_HOSTS = 50  # distinct domains of one field (From, Reply-To, Sender) judged for look-alikes
NONE = "-"  # the metric label of findings that imitate no protected name (links to IPs, shorteners)


@dataclass(frozen=True)
class Finding:
    kind: str  # a key of rules.FINDINGS
    protected: str  # the protected name imitated, from the configuration or the rule file; NONE
    place: str  # from | reply-to | sender | envelope | link | ""
    what: str  # for people: the name or link concerned (the log and scan output, never a label)
    spoofed: str = ""  # the From domain a spoofed-* finding names in the reply (when plain ASCII)
    defer: bool = False  # a spoofed-* finding that could not be verified: our resolver is not answering


class ImpersonationCheck(CheckHooks):
    name = "impersonation"
    stages = frozenset({Stage.EOM})

    def __init__(self, domains: Domains, metrics: Metrics, settings: ImpersonationConfig,
                 resolver: Resolver | None = None, recheck_seconds: float = RECHECK_SECONDS):  # fmt: skip
        self.domains = domains
        self.metrics = metrics
        self.settings = settings
        self.resolver = resolver  # the shared DNS layer: a second look at a policy that auth could not read
        self.recheck_seconds = recheck_seconds
        self._protected: dict[int, Protected] = {}  # by id of the compiled rules (one per rule-set version)

    def protected(self, rules: ImpersonationRules) -> Protected:
        found = self._protected.get(id(rules))
        if found is None or found.source is not rules:
            names = (*self.domains.local, *rules.protected)
            found = Protected(names, self.domains.government, rules.near_distance, source=rules)
            self._protected = {id(rules): found}  # the previous rule set's names are dropped
        return found

    def run(self, stage: Stage, tx: Transaction) -> Sequence[Verdict]:
        rules = tx.ruleset.get(RULE_KIND)
        if tx.envelope.internal or not isinstance(rules, ImpersonationRules) or not rules.rules:
            return []
        protected = self.protected(rules)
        summary = tx.scratch.get(AUTH_SUMMARY_KEY)
        summary = summary if isinstance(summary, AuthSummary) else None
        authors = list(addresses(tx.header("From")))
        dkim_passes = [normalize_domain(d) for r, d in (summary.dkim if summary else ()) if r == "pass"]
        # every author allowed: an allowed service (shared with others) cannot add another protected author
        domains = [normalize_domain(split_address(address)[1]) for _, address in authors]
        if rules.allow and domains and all(
            domain and any(a.allows(domain, tx.envelope.client_ip, dkim_passes) for a in rules.allow)
            for domain in domains
        ):
            return [Verdict(Action.CONTINUE, self.name, reason=f"allowed outside sender for {domains[0]}")]
        findings = list(self._findings(tx, rules, protected, authors, summary))
        trusted = self._authenticated_government(authors, protected, summary)
        verdicts = []
        for finding in findings:
            for rule in rules.matching(finding.kind, finding.place if finding.kind.startswith("lookalike-") else ""):
                verdicts.append(self._verdict(rule, finding, trusted))
                self.metrics.impersonation_hits.labels(kind=finding.kind, protected=finding.protected).inc()
        # scores first: the pipeline stops at a refusal; a sure refusal before a deferral
        verdicts.sort(key=lambda v: (v.action is not Action.CONTINUE, v.action is Action.TEMPFAIL))
        return verdicts

    def _verdict(self, rule: ImpersonationRule, finding: Finding, trusted: str) -> Verdict:
        reason = f"{finding.kind}: {finding.what}"
        if rule.action == "reject" and not trusted:
            # the spoofed name when it is plain and short, else the protected one (from the configuration or the
            # rule file), else the first government name: never text from the wire that the reply cannot carry
            domain = next((d for d in (finding.spoofed, finding.protected) if len(d) <= 100 and _REPLY_DOMAIN.match(d)),
                          (*self.domains.government, "gov.vn")[0])  # fmt: skip
            if finding.defer:  # could not be verified: neither accepted nor refused
                return Verdict(Action.TEMPFAIL, self.name, rule=rule.id, code="451", enhanced="4.4.3",
                               text=self.settings.reply_text_tempfail.format(domain=domain), mode=rule.mode,
                               reason=reason[:300])  # fmt: skip
            return Verdict(Action.REJECT, self.name, rule=rule.id, code="550", enhanced="5.7.1",
                           text=self.settings.reply_text.format(domain=domain), mode=rule.mode,
                           reason=reason[:300])  # fmt: skip
        if rule.action == "reject":
            reason += f" (not refused: the message passed DMARC for {trusted})"
        return Verdict(Action.CONTINUE, self.name, rule=rule.id, mode=rule.mode, score=rule.score, reason=reason[:300])

    # ---- the findings -------------------------------------------------------------------------

    def _findings(self, tx: Transaction, rules: ImpersonationRules, protected: Protected,
                  authors: list[tuple[str, str]], summary: AuthSummary | None) -> Iterator[Finding]:  # fmt: skip
        government_from = ""
        for display, address in authors:
            domain = normalize_domain(split_address(address)[1])
            owner = protected.owner(domain) if domain else ""
            if owner:
                government_from = government_from or owner
                spoof = self._spoofed(domain, owner, summary)
                if spoof:
                    yield spoof
            else:  # a quoted local part shows too: "thongbao@bacninh.gov.vn"@evil.example
                yield from self._display_name(f"{display} {split_address(address)[0]}".strip(), rules, protected)
        for place, name in (("from", "From"), ("reply-to", "Reply-To"), ("sender", "Sender")):
            if past_field_chars(tx.header(name)):  # the rest is not read: the rule file says what that costs
                yield Finding("past-limit", NONE, place, f"{place} is longer than {FIELD_CHARS} characters")
        places = (("from", authors), ("reply-to", list(addresses(tx.header("Reply-To")))),
                  ("sender", list(addresses(tx.header("Sender")))),
                  ("envelope", [("", tx.envelope.mail_from)] if tx.envelope.mail_from else []))  # fmt: skip
        judged: set[tuple[str, str]] = set()
        for place, found in places:
            hosts = 0
            for _, address in found:
                host = split_address(address)[1]
                if not host or (place, host) in judged:
                    continue
                hosts += 1
                if hosts > MAX_HOSTS:  # the rest is not judged: the rule file says what that costs
                    yield Finding("past-limit", NONE, place, f"{place} has more than {MAX_HOSTS} domains")
                    break
                judged.add((place, host))
                shape = protected.judge(host)
                if shape is not None:
                    yield Finding(f"lookalike-{shape.shape}", shape.protected, place,
                                  f"{place} {host[:100]} imitates {shape.protected}")  # fmt: skip
        if government_from:
            for _, address in places[1][1]:
                domain = normalize_domain(split_address(address)[1])
                if domain and not protected.owner(domain):
                    yield Finding("reply-diversion", government_from, "reply-to",
                                  f"From {government_from}, Reply-To {domain[:100]}")  # fmt: skip
                    break
        yield from self._links(tx, rules, protected)

    def _spoofed(self, domain: str, owner: str, summary: AuthSummary | None) -> Finding | None:
        local = any(domain == n or domain.endswith("." + n) for n in self.domains.local)
        kind = "spoofed-local" if local else "spoofed-government"
        if summary is None:  # auth did not run: only our own names are known to be ours alone
            return Finding(kind, owner, "from", f"From {domain}, not authenticated", domain) if local else None
        if _authenticated(domain, summary):  # a temperror of another author excuses nothing
            return None
        excuse = self._dns_excuse(domain, summary)
        if excuse == "exempt":
            return None  # a DNS failure never refuses (the sender's DNS may be down, not the sender a forger)
        defer = excuse == "defer"
        what = f"From {domain}, dmarc={summary.dmarc}" + (", not verifiable now (DNS)" if defer else "")
        return Finding(kind, owner, "from", what, domain, defer=defer)

    def _dns_excuse(self, domain: str, summary: AuthSummary) -> str:
        """What a DNS failure that struck this From domain's checks changes.

        "" nothing: none struck it, or only its DMARC policy lookup did and the policy reads now (the
        message's DNS budget was spent on another name first, a MAIL FROM domain whose DNS never
        answers: with no aligned SPF or DKIM result DMARC cannot pass). "exempt": the domain's own DNS
        fails now too, never refused. "defer" (451, the sender tries again later): our resolver is not
        answering (its breaker is open), or an aligned SPF or DKIM check failed while the domain's DNS
        answers now (the budget spent elsewhere: a fake d= signature must not excuse a forger)."""
        base = registered_domain(domain)
        struck_dmarc = summary.dmarc == "temperror" and normalize_domain(summary.dmarc_domain) == domain
        spf_struck = summary.spf == "temperror" and registered_domain(normalize_domain(summary.spf_domain)) == base
        struck_aligned = spf_struck or any(
            r == "temperror" and registered_domain(normalize_domain(d)) == base for r, d in summary.dkim
        )
        if not struck_dmarc and not struck_aligned:
            return ""
        if isinstance(self.resolver, DnsClient) and self.resolver.resolver_down():
            return "defer"
        state = self._policy_state(domain)
        if state == "failed":
            return "exempt"
        if state == "down" or struck_aligned:
            return "defer"
        return ""

    def _policy_state(self, domain: str) -> str:
        """The DMARC policy of `domain` asked once more, on its own small budget: "answered", "failed"
        (a timeout or an error: the domain's DNS), "down" (not asked: our resolver is paused)."""
        if self.resolver is None:
            return "failed"
        budget = Budget(self.recheck_seconds)
        for name in dict.fromkeys((domain, registered_domain(domain))):
            records = self.resolver.query(f"_dmarc.{name}", "TXT", budget, "dmarc")
            if records.status == SKIPPED:
                return "down"
            if records.status in FAILED:
                return "failed"
            if records.status == FOUND:
                break
        return "answered"

    def _authenticated_government(self, authors: list[tuple[str, str]], protected: Protected,
                                  summary: AuthSummary | None) -> str:  # fmt: skip
        """The government domain of From that the message is authenticated for, or ""."""
        if summary is None:
            return ""
        for _, address in authors:
            domain = normalize_domain(split_address(address)[1])
            if domain and protected.owner(domain) and _authenticated(domain, summary):
                return domain
        return ""

    def _display_name(self, display: str, rules: ImpersonationRules, protected: Protected) -> Iterator[Finding]:
        if not display:
            return
        written = rules.state_name_in(display)
        if written:
            yield Finding("display-name", NONE, "from", f"display name holds {written[:100]!r}")
            return
        for token in _DOMAIN_IN_TEXT.findall(readable(display)):
            host = token.rsplit("@", 1)[-1]
            domain = normalize_domain(host)
            owner = protected.owner(domain) if domain else ""
            if not owner:
                shape = protected.judge(host)  # a look-alike of a government name shown as the name
                owner = shape.protected if shape else ""
            if owner:
                yield Finding("display-name", owner, "from", f"display name holds {(domain or host)[:100]}")
                return

    def _links(self, tx: Transaction, rules: ImpersonationRules, protected: Protected) -> Iterator[Finding]:
        if self.settings.max_links == 0:
            return
        facts = tx.facts()
        html_parts = [part for part in facts.texts if part.content_type == "text/html"]
        loose = (link for part in html_parts for piece in part.pieces() for link in loose_links(piece))
        # the transaction's one extraction, shared with dnsbl and content (it ran for them already)
        links = distinct_links(itertools.chain(message_links(tx.scratch, facts.texts), loose))
        for count, link in enumerate(links, 1):
            if count > self.settings.max_links:
                # past the bound the rest is not judged: a deceptive link behind max_links harmless ones
                # must still cost the message something (a stated score, rules/impersonation.toml)
                what = f"more than {self.settings.max_links} distinct links: the rest were not judged"
                yield Finding("links-past-limit", NONE, "link", what)
                break
            yield from self._link(link, rules, protected)
        for part in html_parts:
            if any(_data_href(piece) for piece in part.pieces()):
                yield Finding("link-data", NONE, "link", "link to a data: URL")
                break

    def _link(self, link: Link, rules: ImpersonationRules, protected: Protected) -> Iterator[Finding]:
        if link.ip:
            yield Finding("link-ip", NONE, "link", f"link to {link.host}")
        else:
            shape = protected.judge(link.host)
            if shape is not None:
                yield Finding(f"lookalike-{shape.shape}", shape.protected, "link",
                              f"link {link.host} imitates {shape.protected}")  # fmt: skip
            for shortener in rules.shorteners:
                if link.host == shortener or link.host.endswith("." + shortener):
                    yield Finding("link-shortener", shortener, "link", f"link to {link.host}")
                    break
        if link.text:
            yield from self._link_text(link, protected)
        user = _USER_INFO.match(link.url)  # https://bacninh.gov.vn@evil.example/ shows our name, goes to evil.example
        if user and not protected.owner(link.host):
            for owner, name in government_names(user.group(1), protected):
                if registered_domain(name) != link.domain:
                    yield Finding("link-text-government", owner, "link",
                                  f"link shows {name[:100]} before @, goes to {link.host}"[:200])  # fmt: skip
                    break

    def _link_text(self, link: Link, protected: Protected) -> Iterator[Finding]:
        inside = bool(protected.owner(link.host))  # a link to a state site deceives no one about the state
        shown = shown_host(link.text)
        if shown:  # the text is one name or URL
            if registered_domain(shown) != link.domain:
                owner = _shown_owner(shown, link.text, protected)
                if owner and inside:  # one state site's name on a link to another
                    return
                what = f"link shows {shown}, goes to {link.host}"[:200]
                if owner:
                    yield Finding("link-text-government", owner, "link", what)
                else:
                    yield Finding("link-text-mismatch", NONE, "link", what)
            return
        if inside:
            return
        for owner, name in government_names(link.text, protected):  # a government name among other words
            if registered_domain(name) != link.domain:
                what = f"link shows {name[:100]}, goes to {link.host}"[:200]
                yield Finding("link-text-government", owner, "link", what)
                return


def _shown_owner(shown: str, text: str, protected: Protected) -> str:
    """The protected or government name a link text's name is, or reads as through look-alike letters."""
    owner = protected.owner(shown)
    if not owner and not text.isascii():
        shape = protected.judge(shown)
        owner = shape.protected if shape is not None and shape.shape == "confusable" else ""
    return owner


def government_names(text: str, protected: Protected) -> Iterator[tuple[str, str]]:
    """(protected name, name as shown) of each government or protected name a text shows among other
    words (at most MAX_SHOWN): IDN dots and look-alike letters read; a protected body's name also when
    spaces stand around its dots (`bacninh .gov.vn`, an invisible image between)."""
    shown = readable(text)
    tokens = [(t, False) for t in _DOMAIN_IN_TEXT.findall(shown)[:MAX_SHOWN]]
    if " ." in shown or ". " in shown:
        tokens += [(t, True) for t in _DOMAIN_IN_TEXT.findall(_SPACED_DOT.sub(".", shown))[:MAX_SHOWN]]
    for token, despaced in tokens:
        name = normalize_domain(token.strip(".-"))
        if not name:
            continue
        owner = _shown_owner(name, token, protected)
        if owner and (not despaced or owner in protected.names):  # `day. Gov.vn` joined is no one's name
            yield owner, name


def _authenticated(domain: str, summary: AuthSummary) -> bool:
    """DMARC passed for this From domain or, with no DMARC record (or a broken one), SPF or DKIM passed aligned.

    The summary holds one author's DMARC result (the strictest of several From domains): for another
    author, an aligned SPF or DKIM pass (what DMARC's relaxed alignment asks) is what counts."""
    if normalize_domain(summary.dmarc_domain) == domain:
        if summary.dmarc == "pass":
            return True
        if summary.dmarc not in ("none", "permerror"):
            return False
    base = registered_domain(domain)
    if summary.spf == "pass" and registered_domain(normalize_domain(summary.spf_domain)) == base:
        return True
    return any(r == "pass" and registered_domain(normalize_domain(d)) == base for r, d in summary.dkim)


def addresses(values: Sequence[str], limit: int = FIELD_CHARS) -> Iterator[tuple[str, str]]:
    """(display name decoded, address) of every address of the fields; encoded words are decoded per name,
    so an encoded `<x@gov.vn>` inside a display name stays part of the name.

    The fields are read up to `limit` characters together, white space runs as one space, cut after
    the last whole address: a reader sees the first addresses of a field, and the cost stays bounded."""
    for value in values:
        if limit <= 0:
            return
        value = " ".join(utf8(value).split())
        if len(value) > limit:
            cut = value.rfind(",", 0, limit)
            value = value[: cut if cut > 0 else limit]
        limit -= len(value)
        parsed = email.utils.getaddresses([value])
        found = []
        for display, address in parsed:
            if "@" in address:
                found.append((display, address))
            elif "=?" in address:  # an encoded word in place of the address: a reader sees what it decodes to
                shown = decode_header_value(address).replace("\n", " ")
                found += [(d or display, a) for d, a in email.utils.getaddresses([shown]) if "@" in a]
        if not found and "@" in value:  # a field the parser gives up on still shows its addresses to the reader
            found = [("", m.group(0)) for m in _ADDRESS_IN_TEXT.finditer(value)]
        if not found:
            found = [(d, a) for d, a in parsed if d]
        group = _GROUP.match(value)  # `Cục Thuế: x@gmail.com;` shows the group's name as the sender's
        for display, address in found:
            yield decode_header_value(f"{group.group(1)} {display}" if group else display), address


def past_field_chars(values: Sequence[str], limit: int = FIELD_CHARS) -> bool:
    """Whether `addresses` leaves part of these fields unread (longer than `limit` as it reads them)."""
    total = 0
    for value in values:
        total += len(" ".join(utf8(value).split()))
        if total > limit:
            return True
    return False


def utf8(value: str) -> str:
    """A header value whose raw 8-bit bytes (SMTPUTF8, carried as surrogates) are read as UTF-8."""
    if not any("\udc80" <= ch <= "\udcff" for ch in value):
        return value
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # other lone surrogates
        return value.encode("utf-8", "replace").decode("utf-8")


def loose_links(piece: str) -> Iterator[Link]:
    """The HTML links a browser follows that the shared extraction (text/links.py) does not read as
    links: protocol-relative (`//evil.example/`), backslashes or too few slashes (`https:\\evil.example`,
    `https:evil.example`), entities or tabs inside the scheme (`ht&#9;tps://`). Each with its anchor text."""
    for href in _HREF.finditer(piece):
        start = _HREF_LEAD.match(piece, href.end()).end()  # type: ignore[union-attr]  # matches empty
        quote = piece[start - 1] if start > href.end() and piece[start - 1] in "\"'" else ""
        end = piece.find(quote, start, start + URL_LIMIT) if quote else -1
        if end < 0:
            found = _UNQUOTED_END.search(piece, start, start + URL_LIMIT)
            end = found.start() if found else min(len(piece), start + URL_LIMIT)
        raw = html.unescape(piece[start:end])
        if _PLAIN_URL.match(raw.lstrip()):  # the shared extraction reads it
            continue
        value = raw.translate(_URL_NOISE).strip("\x00- ").replace("\\", "/")
        loose = _LOOSE_URL.match(value)
        if loose is None:
            continue
        host = urllib.parse.unquote(loose.group(1))
        address = ip_host(value, loose.start(1), host)
        name = address or normal_domain(host)
        if name is None:
            continue
        shown = html.unescape(anchor_text(piece, start, end))
        yield Link(value[:URL_LIMIT], name, name if address else registered_domain(name), bool(address), shown)


def _data_href(piece: str) -> bool:
    """An href to a data: URL, as the browser reads it: entities decoded, tabs and line breaks dropped."""
    if ":" not in piece:
        return False
    for href in _HREF.finditer(piece):
        value = piece[href.end() : href.end() + 512]  # `&#0000100;&#97;...` spelling "data:", zeros and all
        if _DATA_VALUE.match(html.unescape(value).translate(_URL_NOISE)):
            return True
    return False


def strip_invisible(text: str) -> str:
    return "".join(c for c in text if c.isprintable() or c == " ")


def readable(text: str) -> str:
    """Text as a reader sees names in it: invisible characters removed, NFKC (fullwidth letters and
    dots), the IDN full stops (U+3002, U+FF0E, U+FF61) as dots; a right-to-left override's stretch in
    the order it shows (`<U+202E>nv.vog.hninacab` shows bacninh.gov.vn: normalize() reads it)."""
    if text.isascii():
        return text
    if "\u202e" in text:
        return normalize(text).translate(_DOTS)
    return unicodedata.normalize("NFKC", strip_invisible(text)).translate(_DOTS)


def shown_host(text: str) -> str:
    """The host a link's visible text shows (`https://mail.gov.vn/x`, `mail.gov.vn`), "" when it shows none."""
    shown = readable(text).strip().strip(".,;:!?()[]<>\"'")
    match = URL_HOST.search(shown)
    if match:
        host = match.group(1)
        if match.group(0)[:4].lower() == "www.":
            host = "www." + host
    elif (bare := _BARE_DOMAIN.match(shown)) and _TLD.match(bare.group(1).rsplit(".", 1)[-1]):
        host = bare.group(1)
    else:
        return ""
    return normal_domain(host) or ""


def build(config: Config, metrics: Metrics) -> ImpersonationCheck:
    confusable_table()  # read the confusables data (about 80 ms) at start, not inside the first message
    domains = Domains.from_names(config.domains.local, config.domains.government)
    return ImpersonationCheck(domains, metrics, config.impersonation, shared_client(config.dns, metrics),
                              min(RECHECK_SECONDS, config.dns.budget))  # fmt: skip
