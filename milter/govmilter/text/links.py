"""The links of a message's text: one extraction for the dnsbl check and the content rules.

A link is `scheme://host...` (http, https, ftp) or a bare `www.host...`, found after a
word boundary in the decoded text parts as sent: an HTML part is read as markup with its
entities decoded, so the target of `<a href="...">` and `<img src="...">` is found
beside the links written in the text. Each link gives its full URL (up to white space,
a quote or an angle bracket, trailing punctuation dropped, at most URL_LIMIT characters),
its host as DNS spells it and the host's registered domain (Public Suffix List,
domains.py), so "a link outside gov.vn" is one comparison. A link inside another
(a redirector's `?u=https://...`) is found on its own too.

The text is read in windows of LINK_WINDOW characters cut at white space (no link and no
entity holds any), so memory is one window whatever the message.
"""

from __future__ import annotations

import html
import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from govmilter.domains import normalize_domain, registered_domain
from govmilter.text.normalize import windows

LINK_WINDOW = 65536  # characters of text searched for links at a time
URL_LIMIT = 2048  # characters of a URL kept (and matched by link rules)

# hosts of links: scheme://[userinfo@]host, or a bare www.host, each after a word boundary
URL_HOST = re.compile(r"(?:\b(?:https?|ftp)://(?:[^\s/?#@<>\"']*@)?|\bwww\.)([^\s/?#:<>\"'\\)\]}|,;]+)", re.I)
_URL_AT = re.compile(r"(?:(?:https?|ftp)://(?:[^\s/?#@<>\"']*@)?|www\.)([^\s/?#:<>\"'\\)\]}|,;]+)", re.I)
# what follows the host: port, path, query and fragment, up to white space, a quote or a bracket
_URL_TAIL = re.compile(rf"[^\s<>\"'`]{{0,{URL_LIMIT}}}")
_TRAILING = re.compile(r"[^\w]+$")
_TAIL_PUNCT = ".,;:!?)]}'*"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})+$")


@dataclass(frozen=True)
class Link:
    url: str  # as written (entities decoded), at most URL_LIMIT characters
    host: str  # lower-case ASCII host name, or the address of an IP link
    domain: str  # the host's registered domain ("shop.com.vn"), the address of an IP link
    ip: bool = False  # the host is an IP address


def normal_domain(host: str) -> str | None:
    """A host name as DNS spells it, lower-case ASCII; None when it is not a host name."""
    name = normalize_domain(_TRAILING.sub("", host.strip()))  # "example.com." or "example.com!" ends a sentence
    return name if _HOSTNAME.match(name) else None


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
        name = normal_domain("www." + host if bare_www else host)
        if name is None:
            continue
        tail = _URL_TAIL.match(text, match.end())
        end = tail.end() if tail is not None else match.end()
        url = text[match.start() : end].rstrip(_TAIL_PUNCT)[:URL_LIMIT]
        if is_ip(name):
            yield Link(url, name, name, ip=True)
        else:
            yield Link(url, name, registered_domain(name))


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
