"""Link rules, structured conditions and combined rules (issue 20), through the daemon's pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from govmilter.checks.content.conditions import domain_list
from govmilter.checks.dnsbl import link_domains
from govmilter.model import Action, Mode
from govmilter.ruleset import RuleErrors
from govmilter.ruleset.expression import ExpressionError, parse
from govmilter.text.links import iter_links, links_in
from support.harness import Harness

OTHERS = ["forwarding", "attachments", "size", "antivirus", "dnsbl", "auth"]
INBOUND = {"client_ip": "127.0.0.3", "mail_from": "someone@mail.example.net"}

PHISH_RULES = """kind = "content"

[[rule]]
id = "link-outside-gov"
description = "a link whose host is outside gov.vn"
link_domain_not = ["gov.vn"]
score = 0

[[rule]]
id = "login-words"
pattern = "dang nhap|xac minh tai khoan"
ignore_diacritics = true
score = 0

[[rule]]
id = "phish-login-outside-gov"
description = "asks to log in and links outside gov.vn"
expression = "login-words and link-outside-gov and not sender-gov"
score = 8

[[rule]]
id = "sender-gov"
sender_domain = ["gov.vn"]
score = 0

[[rule]]
id = "ip-link"
target = "link"
pattern = '^https?://\\d+\\.\\d+\\.\\d+\\.\\d+'
score = 2

[[rule]]
id = "shortener"
target = "link-domain"
pattern = '^(bit\\.ly|tinyurl\\.com)$'
score = 1.5
"""


def message(html: str, sender: str = "bo-phan@mail.example.net") -> bytes:
    return (
        f"From: <{sender}>\nTo: user@bacninh.gov.vn\nSubject: Thong bao\nMessage-ID: <l1@example.net>\n"
        f"MIME-Version: 1.0\nContent-Type: text/html; charset=utf-8\n\n{html}\n"
    ).encode()


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    (tmp_path / "phish.toml").write_text(PHISH_RULES)
    return Harness(overrides=[f'rules.dir="{tmp_path}"'], skip=OTHERS)


def hits(harness: Harness, data: bytes, **envelope: str) -> dict[str, str]:
    result = harness.scan(data, **{**INBOUND, **envelope})
    try:
        scored = {"spam-tag", "spam-score"}  # the score's own verdicts
        return {h.rule: h.reason for h in result.tx.hits if h.check == "content" and h.rule not in {"", *scored}}
    finally:
        result.close()


def test_links_are_the_html_targets_and_the_text_links() -> None:
    text = (
        '<a href="https://login.evil.example.com/x?a=1&amp;b=2">dich vu cong</a> '
        '<img src="http://203.0.113.7/p.png"> see www.Shop.com.vn/sale. '
        "and https://bit.ly/abc?u=https://dichvucong.gov.vn/ok"
    )
    found = list(links_in(text))
    assert [(link.url, link.host, link.domain) for link in found] == [
        ("https://login.evil.example.com/x?a=1&b=2", "login.evil.example.com", "example.com"),
        ("http://203.0.113.7/p.png", "203.0.113.7", "203.0.113.7"),
        ("www.Shop.com.vn/sale", "www.shop.com.vn", "shop.com.vn"),
        ("https://bit.ly/abc?u=https://dichvucong.gov.vn/ok", "bit.ly", "bit.ly"),
        ("https://dichvucong.gov.vn/ok", "dichvucong.gov.vn", "dichvucong.gov.vn"),
    ]
    assert found[1].ip and not found[0].ip
    # the same extraction feeds the dnsbl check's names
    assert link_domains([text], ["bacninh.gov.vn"], 20) == [
        "example.com",
        "login.evil.example.com",
        "shop.com.vn",
        "bit.ly",
        "dichvucong.gov.vn",
    ]
    # read in windows: a link in the second window is found
    pieces = ["x " * 40000, "https://far.example.org/a"]
    assert [link.host for link in iter_links([pieces])] == ["far.example.org"]


def test_a_domain_list_is_the_name_or_under_it_and_exact_with_equals() -> None:
    under, bad = domain_list(["gov.vn", "=Example.COM."], negated=False)
    assert bad == []
    assert under.holds("gov.vn") and under.holds("bacninh.gov.vn") and under.holds("example.com")
    assert not under.holds("evilgov.vn") and not under.holds("gov.vn.evil.com") and not under.holds("www.example.com")
    assert not under.holds("")
    outside, _ = domain_list(["gov.vn"], negated=True)
    assert outside.holds("evil.com") and outside.holds("") and not outside.holds("x.gov.vn")
    assert domain_list(["not a domain", "http://x"], negated=False)[1] == ["not a domain", "http://x"]


def test_a_phishing_message_fires_the_link_and_combined_rules(harness: Harness) -> None:
    html = '<p>Vui long <a href="https://dichvucong-gov.vn.example.com/login">đăng nhập</a> de xac minh.</p>'
    found = hits(harness, message(html))
    assert set(found) == {"link-outside-gov", "login-words", "phish-login-outside-gov"}
    assert "dichvucong-gov.vn.example.com" in found["link-outside-gov"]
    assert "login-words and link-outside-gov and not sender-gov" not in found["phish-login-outside-gov"]
    assert "expression held" in found["phish-login-outside-gov"]


def test_the_same_words_with_links_inside_gov_vn_or_from_gov_vn_do_not_combine(harness: Harness) -> None:
    inside = '<p>Vui long <a href="https://dichvucong.gov.vn/login">đăng nhập</a>.</p>'
    assert set(hits(harness, message(inside))) == {"login-words"}
    outside = '<p>Vui long <a href="https://example.com/login">đăng nhập</a>.</p>'
    from_gov = hits(harness, message(outside), mail_from="vanthu@bacninh.gov.vn")
    assert set(from_gov) == {"login-words", "link-outside-gov", "sender-gov"}


def test_link_and_link_domain_targets(harness: Harness) -> None:
    html = '<a href="http://198.51.100.9/a">x</a> <a href="https://bit.ly/x">y</a>'
    found = hits(harness, message(html))
    assert {"ip-link", "shortener"} <= set(found)
    assert "http://198.51.100.9/a" in found["ip-link"]
    assert "bit.ly" in found["shortener"]
    # the link text a reader sees is not the target: the body rule reads "bit.ly" nowhere else
    assert "shortener" not in hits(harness, message("<p>bit.ly is a shortener</p>"))


def test_copies_of_one_link_do_not_push_another_past_max_links(harness: Harness) -> None:
    """[content] max_links counts distinct links: 300 copies of a harmless one leave room for the rest."""
    html = '<a href="https://bacninh.gov.vn/tin">tin</a> ' * 300 + '<a href="https://bit.ly/x">y</a>'
    assert "shortener" in hits(harness, message(html))
    distinct = " ".join(f'<a href="https://bacninh.gov.vn/tin/{n}">tin</a>' for n in range(200))
    assert "shortener" not in hits(harness, message(distinct + ' <a href="https://bit.ly/x">y</a>'))  # past the bound


def test_combined_rule_scores_and_its_parts_do_not(harness: Harness) -> None:
    html = '<p><a href="https://example.com/login">Đăng nhập</a></p>'
    result = harness.scan(message(html), **INBOUND)
    try:
        scores = {h.rule: h.score for h in result.tx.hits if h.check == "content" and h.rule}
        assert scores["phish-login-outside-gov"] == 8 and scores["login-words"] == 0
        assert ("X-Spam-Flag", "YES") in result.verdict.headers  # 8 >= tag 5, < reject 10
    finally:
        result.close()


def test_authenticated_and_from_domain_conditions(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(
        'kind = "content"\n'
        '[[rule]]\nid = "spoofed-gov-from"\nfrom_domain = ["gov.vn"]\nauthenticated = false\n'
        'direction = "inbound"\nscore = 6\n'
    )
    h = Harness(overrides=[f'rules.dir="{tmp_path}"'], skip=OTHERS)
    data = message("<p>x</p>", sender="giamdoc@bacninh.gov.vn")
    assert "spoofed-gov-from" in hits(h, data)
    assert "spoofed-gov-from" not in hits(h, message("<p>x</p>"))
    assert "spoofed-gov-from" not in hits(h, data, client_ip="127.0.0.3", auth_user="giamdoc")


def test_expressions_parse_with_precedence_and_refuse_plain_mistakes() -> None:
    node = parse("a or b and not (c or d)")
    assert node.holds({"a"}) and node.holds({"b"}) and not node.holds({"b", "c"}) and not node.holds(set())
    assert parse("not not a").holds({"a"})
    for bad, words in [
        ("a &&& b", "write and, or, not"),
        ("a and", "ends where"),
        ("(a or b", "not closed"),
        ("a b", "after a complete expression"),
        ("", "empty"),
        ("a and or b", "where a rule id"),
        ("not " * 60 + "a", "deeper"),
    ]:
        with pytest.raises(ExpressionError, match=words):
            parse(bad)


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ('[[rule]]\nid = "c"\nexpression = "a and nosuch"\nscore = 1\n', "'nosuch', which is no content rule"),
        (
            '[[rule]]\nid = "c"\nexpression = "a and d"\nscore = 1\n[[rule]]\nid = "d"\nexpression = "c"\nscore = 1\n',
            "cycle: c -> d -> c",
        ),
        ('[[rule]]\nid = "c"\nexpression = "c or a"\nscore = 1\n', "names the rule itself"),
        ('[[rule]]\nid = "c"\nexpression = "a and"\nscore = 1\n', "ends where a rule id was expected"),
        ('[[rule]]\nid = "c"\nexpression = "a"\npattern = "x"\nscore = 1\n', "a combined rule has an expression"),
        ('[[rule]]\nid = "z"\npattern = "y"\nscore = 0\n', "score 0 only for a part of a combined rule"),
        ('[[rule]]\nid = "n"\nscore = 1\n', "missing pattern"),
        ('[[rule]]\nid = "n"\nlink_domain_not = ["not a name"]\nscore = 1\n', "not a domain name"),
        ('[[rule]]\nid = "n"\nsender_domain = []\nscore = 1\n', "empty list"),
    ],
)
def test_rule_problems_of_the_new_keys(tmp_path: Path, rules: str, expected: str) -> None:
    base = 'kind = "content"\n[[rule]]\nid = "a"\npattern = "x"\nscore = 1\n'
    (tmp_path / "c.toml").write_text(base + rules)
    with pytest.raises(RuleErrors, match=expected):
        Harness(overrides=[f'rules.dir="{tmp_path}"'], skip=OTHERS)


def test_a_combined_rule_may_name_another_checks_finding(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(
        'kind = "content"\n'
        '[[rule]]\nid = "big-and-words"\nexpression = "size/declared-size or khuyen-mai"\nscore = 3\nmode = "monitor"\n'
        '[[rule]]\nid = "khuyen-mai"\npattern = "khuyen mai"\nscore = 0\n'
    )
    h = Harness(overrides=[f'rules.dir="{tmp_path}"'], skip=OTHERS)
    result = h.scan(message("<p>khuyen mai</p>"), **INBOUND)
    try:
        hit = next(v for v in result.tx.hits if v.rule == "big-and-words")
        assert hit.mode is Mode.MONITOR and hit.action is Action.CONTINUE
    finally:
        result.close()


def test_monitor_mode_tells_the_score_and_verdict_the_message_would_have_had(tmp_path: Path) -> None:
    from govmilter import decision

    (tmp_path / "c.toml").write_text(
        'kind = "content"\n'
        '[[rule]]\nid = "watched"\npattern = "khuyen mai"\nscore = 9\nmode = "monitor"\n'
        '[[rule]]\nid = "counted"\npattern = "gia re"\nscore = 3\n'
    )
    h = Harness(overrides=[f'rules.dir="{tmp_path}"'], skip=OTHERS)
    result = h.scan(message("<p>khuyen mai gia re</p>"), **INBOUND)
    try:
        headers = dict(result.verdict.headers)
        assert headers["X-Spam-Score"] == "3.0"  # what is enforced
        assert headers["X-Govmilter-Monitor"] == "check=content rule=spam-score score=12.0 would=reject"
        line = decision.log_line(result.tx, result.verdict)
        assert "action=accept" in line and "would_score=12.0" in line and "would=reject" in line
        assert result.as_json()["monitor"] == {"score": 12.0, "would": "reject"}
    finally:
        result.close()
    quiet = h.scan(message("<p>gia re</p>"), **INBOUND)
    try:  # nothing monitored fired: nothing to tell
        assert "X-Govmilter-Monitor" not in dict(quiet.verdict.headers) and "monitor" not in quiet.as_json()
    finally:
        quiet.close()
