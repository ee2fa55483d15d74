"""Links are read only when a rule needs them, and once per message for every check that reads them.

The shipped phishing rule is `login-request and link-outside-gov and not sender-partner`: the part
`link-outside-gov` (a link condition, score 0) is evaluated only if `login-request` fired, so an
ordinary inbound message is never searched for links by the content check (issue 22: the link
extraction had grown the content check's cost 25-30 % on the corpus).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pytest

from govmilter.model import TextPart
from govmilter.pipeline import CHECK_NAMES
from govmilter.text import links as links_module
from govmilter.text.links import Link, message_links
from support.harness import Harness

ONLY_CONTENT = [name for name in CHECK_NAMES if name != "content"]
INBOUND = {"client_ip": "127.0.0.3", "mail_from": "tin@news.example.net", "rcpts": ["u@bacninh.gov.vn"]}


def newsletter(body_words: str) -> bytes:
    links = "".join(f'<p><a href="https://shop{n}.example.com/p/{n}">San pham {n}</a></p>' for n in range(60))
    return (
        "From: <tin@news.example.net>\r\nTo: <u@bacninh.gov.vn>\r\nSubject: Ban tin\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>{body_words}</p>{links}</body></html>\r\n"
    ).encode()


@pytest.fixture
def extractions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many links each extraction of text/links.py yielded (one entry per extraction)."""
    counts: list[int] = []
    real = links_module.iter_links

    def counting(parts: Iterable[Iterable[str]]) -> Iterator[Link]:
        counts.append(0)
        index = len(counts) - 1
        for link in real(parts):
            counts[index] += 1
            yield link

    monkeypatch.setattr(links_module, "iter_links", counting)
    return counts


def test_no_link_is_read_when_no_expression_gets_that_far(extractions: list[int]) -> None:
    result = Harness(skip=ONLY_CONTENT).scan(newsletter("Ban tin thang nay."), **INBOUND)
    assert "link-outside-gov" not in [h.rule for h in result.hits]
    assert sum(extractions) == 0  # not one link searched for


def test_the_part_is_read_when_the_expression_needs_it(extractions: list[int]) -> None:
    words = "Vui long dang nhap de xac minh tai khoan cua ban."
    result = Harness(skip=ONLY_CONTENT).scan(newsletter(words), **INBOUND)
    fired = [h.rule for h in result.hits]
    assert {"login-request", "link-outside-gov", "phish-login-link"} <= set(fired), fired
    assert extractions == [1]  # the first link already holds the condition: no more read


def texts(html: str) -> list[TextPart]:
    return [TextPart("text/html", html)]


def test_every_reader_shares_one_extraction(extractions: list[int]) -> None:
    scratch: dict[str, object] = {}
    parts = texts(" ".join(f"https://a{n}.example.org/x" for n in range(50)))
    first, second = message_links(scratch, parts), message_links(scratch, parts)
    assert first is second
    reader_a, reader_b = iter(first), iter(second)
    seen_a = [next(reader_a).host for _ in range(10)]
    seen_b = [link.host for link in reader_b]  # reads past where a stopped
    seen_a += [link.host for link in reader_a]
    assert seen_a == seen_b == [f"a{n}.example.org" for n in range(50)]
    assert extractions == [50]


def test_past_the_kept_links_a_reader_reads_on_by_itself(
    extractions: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(links_module, "KEPT_LINKS", 5)
    shared = message_links({}, texts(" ".join(f"https://b{n}.example.org/" for n in range(12))))
    assert [link.host for link in shared] == [f"b{n}.example.org" for n in range(12)]
    assert [link.host for link in shared][:3] == ["b0.example.org", "b1.example.org", "b2.example.org"]
    assert len(shared._found) == 5  # memory stays bounded: the rest came from reads of their own
