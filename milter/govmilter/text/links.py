"""The links of a message's text: one extraction for the dnsbl check and the content rules.

A link is `scheme://host...` (http, https, ftp) or a bare `www.host...`, found after a
word boundary in the decoded text parts as sent: an HTML part is read as markup with its
entities decoded, so the target of `<a href="...">` and `<img src="...">` is found
beside the links written in the text. Each link gives its full URL (up to white space,
a quote or an angle bracket, trailing punctuation dropped, at most URL_LIMIT characters),
its host as DNS spells it and the host's registered domain (Public Suffix List,
domains.py), so "a link outside gov.vn" is one comparison. The host is read as browsers
read it: percent-encoded letters decoded, an IPv4 address in any form browsers accept
(`3405803786`, hex or octal parts) and an IPv6 literal are IP links (ip_host). A link inside another
(a redirector's `?u=https://...`) is found on its own too. The target of an HTML
`<a href="...">` also carries the anchor's visible text (tags removed, at most
ANCHOR_TEXT_LIMIT characters, read up to ANCHOR_SEARCH characters past the target), so a
link whose text shows one domain and whose target is another can be judged (the
impersonation check); an anchor cut by a window's edge has no text.

The text is read in windows of LINK_WINDOW characters cut at white space (no link and no
entity holds any), so memory is one window whatever the message.
"""

from __future__ import annotations

import html
import ipaddress
import itertools
import re
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from govmilter.domains import normalize_domain, registered_domain
from govmilter.text.normalize import windows

if TYPE_CHECKING:
    from govmilter.model import TextPart

LINK_WINDOW = 65536  # characters of text searched for links at a time
URL_LIMIT = 2048  # characters of a URL kept (and matched by link rules)
ANCHOR_SEARCH = 2048  # characters after an href target searched for the end of its <a ...> tag and </a>
ANCHOR_TEXT_LIMIT = 256  # characters of an anchor's visible text kept

# hosts of links: scheme://[userinfo@]host, or a bare www.host, each after a word boundary; a backslash ends
# the user part as browsers read it (https://evil.example\@gov.vn/ goes to evil.example)
URL_HOST = re.compile(r"(?:\b(?:https?|ftp)://(?:[^\s/\\?#@<>\"']*@)?|\bwww\.)([^\s/?#:<>\"'\\)\]}|,;]+)", re.I)
_URL_AT = re.compile(r"(?:(?:https?|ftp)://(?:[^\s/\\?#@<>\"']*@)?|www\.)([^\s/?#:<>\"'\\)\]}|,;]+)", re.I)
# what follows the host: port, path, query and fragment, up to white space, a quote or a bracket
_URL_TAIL = re.compile(rf"[^\s<>\"'`]{{0,{URL_LIMIT}}}")
_TRAILING = re.compile(r"[^\w]+$")
_TAIL_PUNCT = ".,;:!?)]}'*"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})+$")
_IPV4_PART = re.compile(r"^(?:0[xX][0-9a-fA-F]{0,8}|0[0-7]{0,11}|[1-9][0-9]{0,9})$")  # hex, octal, decimal
_HREF_BEFORE = re.compile(r"""\bhref\s*=\s*["']?\s*$""", re.I)
_ANCHOR_END = re.compile(r"</a\s*>", re.I)
# inline tags (and comments) join the letters around them as shown: `<b>mail</b>.gov.vn` reads mail.gov.vn
_INLINE = "b|i|u|s|em|strong|span|font|small|big|sub|sup|strike|mark|wbr|abbr"
_INLINE_TAG = re.compile(rf"<!--.*?-->|<\s*/?\s*(?:{_INLINE})\b[^>]*>", re.I | re.S)
_TAG = re.compile(r"<[^>]*>")
_SPACE_RUN = re.compile(r"\s+")


@dataclass(frozen=True)
class Link:
    url: str  # as written (entities decoded), at most URL_LIMIT characters
    host: str  # lower-case ASCII host name, or the address of an IP link
    domain: str  # the host's registered domain ("shop.com.vn"), the address of an IP link
    ip: bool = False  # the host is an IP address
    text: str = ""  # the visible text of the <a> whose href this is ("" for every other link)


def normal_domain(host: str) -> str | None:
    """A host name as DNS spells it, lower-case ASCII; None when it is not a host name."""
    name = normalize_domain(_TRAILING.sub("", host.strip()))  # "example.com." or "example.com!" ends a sentence
    return name if _HOSTNAME.match(name) else None


def ip_host(text: str, start: int, host: str) -> str | None:
    """The address a browser reads in a link's host, when it is one: an IPv6 literal `[2001:db8::1]`
    (at `start` of text), or an IPv4 address in any form browsers accept (WHATWG URL): `3405803786`,
    `0xcb.0x00.0x71.0x0a`, `0313.0.0161.012`, `203.113.10`. None for a host name."""
    if host[-1:].isalpha() and "0x" not in host.lower():  # most hosts: a name's last letter, no hex part
        return None
    if host.startswith("["):
        close = text.find("]", start, start + 64)
        try:
            return str(ipaddress.IPv6Address(text[start + 1 : close])) if close > 0 else None
        except ValueError:
            return None
    parts = _TRAILING.sub("", host).split(".")
    if not 1 <= len(parts) <= 4 or not all(_IPV4_PART.match(p) for p in parts):
        return None
    numbers = [int(p[2:] or "0", 16) if p[:2].lower() == "0x" else int(p, 8) if len(p) > 1 and p[0] == "0" else int(p)
               for p in parts]  # fmt: skip
    last = numbers.pop()
    if any(n > 255 for n in numbers) or last >= 256 ** (4 - len(numbers)):
        return None
    value = sum(n << (8 * (3 - i)) for i, n in enumerate(numbers)) + last
    return str(ipaddress.IPv4Address(value))


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def links_in(text: str) -> Iterator[Link]:
    """The links of one text (one window), first written first."""
    text = html.unescape(text) if "&" in text else text
    for match in url_hosts(text):
        host = match.group(1)
        bare_www = match.group(0)[:4].lower() == "www."
        if "%" in host:  # browsers decode a percent-encoded host: bacninh%2Egov%2Evn.evil.example
            host = urllib.parse.unquote(host)
        name = (None if bare_www else ip_host(text, match.start(1), host)) or normal_domain(
            "www." + host if bare_www else host)  # fmt: skip
        if name is None:
            continue
        tail = _URL_TAIL.match(text, match.end())
        end = tail.end() if tail is not None else match.end()
        url = text[match.start() : end].rstrip(_TAIL_PUNCT)[:URL_LIMIT]
        shown = anchor_text(text, match.start(), end)
        if is_ip(name):
            yield Link(url, name, name, ip=True, text=shown)
        else:
            yield Link(url, name, registered_domain(name), text=shown)


def anchor_text(text: str, start: int, end: int) -> str:
    """The visible text of the `<a>` whose href value starts at `start`; "" when it is not one."""
    if not _HREF_BEFORE.search(text, max(0, start - 24), start):
        return ""
    close = text.find(">", end, end + ANCHOR_SEARCH)
    if close < 0:
        return ""
    found = _ANCHOR_END.search(text, close, close + ANCHOR_SEARCH)
    if found is None:
        return ""
    inner = _TAG.sub(" ", _INLINE_TAG.sub("", text[close + 1 : found.start()]))
    return _SPACE_RUN.sub(" ", inner).strip()[:ANCHOR_TEXT_LIMIT]


def iter_links(parts: Iterable[Iterable[str]]) -> Iterator[Link]:
    """The links of texts given as pieces (TextPart.pieces), in order, read one window at a time."""
    for pieces in parts:
        for text in windows(pieces, LINK_WINDOW):
            yield from links_in(text)


def url_hosts(text: str) -> Iterator[re.Match[str]]:
    """The matches URL_HOST.finditer would give, found from the literal "://" and "www." only.

    Running the pattern at every position of a long text cost more than all the
    other checks together; a link cannot start anywhere but next to one of them.
    """
    lowered = text.lower()
    if len(lowered) != len(text):  # a letter lowered into two: positions would not line up
        yield from URL_HOST.finditer(text)
        return
    starts = [i - n for i in _all(lowered, "://") for n in (5, 4, 3) if i >= n]
    starts += _all(lowered, "www.")
    end = 0
    for start in sorted(starts):
        if start < end or (start > 0 and _is_word(text[start - 1])):
            continue
        match = _URL_AT.match(text, start)
        if match:
            end = match.end()
            yield match


def _all(text: str, literal: str) -> list[int]:
    found, i = [], text.find(literal)
    while i >= 0:
        found.append(i)
        i = text.find(literal, i + 1)
    return found


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"  # re's \w for str patterns


KEPT_LINKS = 10000  # links of one message kept for the checks that read them after the first


class MessageLinks:
    """One extraction of a message's links, shared by every check that reads them.

    Each reader iterates from the first link: the links found so far come from the list, the
    next ones from the one extraction, run only as far as the furthest reader goes (a message
    whose rules need no link is never searched). Past KEPT_LINKS links a reader reads on by
    itself (a second extraction, for that rare message only): memory stays bounded.
    """

    def __init__(self, parts: Callable[[], Iterable[Iterable[str]]]):
        self._parts = parts  # the texts as pieces, read again by a reader past KEPT_LINKS
        self._source = iter_links(parts())
        self._found: list[Link] = []
        self._done = False

    def __iter__(self) -> Iterator[Link]:
        index = 0
        while True:
            if index < len(self._found):
                yield self._found[index]
                index += 1
            elif self._done:
                return
            elif index >= KEPT_LINKS:
                yield from itertools.islice(iter_links(self._parts()), index, None)
                return
            else:
                link = next(self._source, None)
                if link is None:
                    self._done = True
                else:
                    self._found.append(link)


def distinct_links(links: Iterable[Link]) -> Iterator[Link]:
    """Each link once: copies (same target, host and text) cannot push another past a check's bound.

    The keys kept grow with the distinct links read; every reader stops at its own bound."""
    seen: set[tuple[str, str, str]] = set()
    for link in links:
        key = (link.url, link.host, link.text)
        if key not in seen:
            seen.add(key)
            yield link


def message_links(scratch: dict[str, Any], texts: Sequence[TextPart]) -> MessageLinks:
    """The message's links, extracted once per transaction (kept in tx.scratch["links"])."""
    found = scratch.get("links")
    if not isinstance(found, MessageLinks):
        found = scratch["links"] = MessageLinks(lambda: (part.pieces(LINK_WINDOW) for part in texts))
    return found
