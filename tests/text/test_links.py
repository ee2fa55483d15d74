"""text/links.py: the visible text of an HTML link rides on its target (the impersonation check reads it)."""

from __future__ import annotations

from govmilter.text.links import ANCHOR_TEXT_LIMIT, Link, iter_links, links_in


def test_an_href_target_carries_its_anchor_text() -> None:
    html = ('<p>Xem <a class="x" href="https://bit.ly/3xY" target=_blank><b>mail</b><!-- -->.gov.vn<br>'
            '</a> ngay, '
            "<a href=http://203.0.113.9/a>Mở</a></p>")  # fmt: skip
    assert list(links_in(html)) == [
        Link("https://bit.ly/3xY", "bit.ly", "bit.ly", text="mail.gov.vn"),
        Link("http://203.0.113.9/a", "203.0.113.9", "203.0.113.9", ip=True, text="Mở"),
    ]


def test_links_that_are_not_an_href_have_no_text() -> None:
    text = 'Xem https://gdt.gov.vn/a <img src="https://cdn.example.com/i.png"> <a>x</a>'
    assert [(link.host, link.text) for link in links_in(text)] == [("gdt.gov.vn", ""), ("cdn.example.com", "")]


def test_a_link_shown_as_text_is_a_link_of_its_own_and_the_anchor_is_bounded() -> None:
    html = '<a href="https://evil.example/x">https://mail.gov.vn/login</a>'
    found = list(links_in(html))
    assert [(link.host, link.text) for link in found] == [
        ("evil.example", "https://mail.gov.vn/login"), ("mail.gov.vn", "")]  # fmt: skip
    long = '<a href="https://a.example/">' + "x " * 1000 + "</a>"
    assert len(next(iter(links_in(long))).text) == ANCHOR_TEXT_LIMIT
    unclosed = '<a href="https://a.example/">no end'
    assert next(iter(links_in(unclosed))).text == ""


def test_the_fields_the_blocklists_and_content_rules_read_are_unchanged() -> None:
    html = '<a href="https://www.shop.com.vn/p?q=1">Mua</a>'
    [link] = list(iter_links([[html]]))
    assert (link.url, link.host, link.domain, link.ip) == ("https://www.shop.com.vn/p?q=1", "www.shop.com.vn",
                                                           "shop.com.vn", False)  # fmt: skip
