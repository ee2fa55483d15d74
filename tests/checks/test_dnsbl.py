"""The dnsbl check: rule files, the names it asks, and whole messages against a real dnsmasq."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from govmilter.checks import dnsbl
from govmilter.checks.dnsbl import (
    DnsblCheck,
    compile_rules,
    link_domains,
    normal_domain,
    reversed_ip,
)
from govmilter.domains import registered_domain
from govmilter.model import Action, Mode, Stage
from govmilter.pipeline import CHECK_NAMES, rule_compilers
from govmilter.ruleset import RuleErrors, RuleFile, load_ruleset
from support.dns_fixture import LabDns, SilentDns
from support.harness import MESSAGES, RULES, Harness

SPAM = MESSAGES / "spam"
OTHERS = [name for name in CHECK_NAMES if name not in ("dnsbl", "content")]
OURS = ("bacninh.gov.vn", "gov.vn")


def rule_file(text: str, path: str = "rules/dnsbl.toml") -> RuleFile:
    import tomllib

    return RuleFile(path, text, tomllib.loads(text))


def harness(port: int, *overrides: str, rules_dir: Path | None = None) -> Harness:
    return Harness(overrides=[f"dns.port={port}", *overrides], skip=OTHERS, rules_dir=rules_dir)


def lookups(h: Harness, zone: str, result: str) -> float:
    value = h.metrics.registry.get_sample_value(
        "govmilter_dns_lookups_total", {"purpose": "dnsbl", "zone": zone, "result": result}
    )
    return value or 0.0


def asked(h: Harness) -> set[str]:
    check = next(c for c in h.pipeline.checks if isinstance(c, DnsblCheck))
    return set(check.client.cache._entries)  # type: ignore[attr-defined]


# ---- the rule file ---------------------------------------------------------------------------


def test_shipped_zones_compile() -> None:
    rules = load_ruleset(RULES, rule_compilers()).get("dnsbl")
    ids = [z.id for z in rules.zones]
    assert ids == ["spamhaus-zen", "spamhaus-pbl", "spamhaus-dbl-sender", "spamhaus-dbl-link", "uribl-black"]
    zen = rules.zones[0]
    assert zen.type == "ip" and zen.reject and zen.mode is Mode.ENFORCE
    assert zen.counts(["127.0.0.2", "127.0.0.9"]) == ["127.0.0.2", "127.0.0.9"]
    assert zen.counts(["127.0.0.10", "127.255.255.254"]) == []  # PBL is the next rule; errors never count


def test_every_problem_is_reported_with_its_line_and_id() -> None:
    text = """kind = "dnsbl"
colour = "blue"

[[zone]]
id = "ok"
zone = "zen.spamhaus.org"
codes = ["127.0.0.2"]

[[zone]]
id = "bad-zone"
zone = "not a zone"
codes = ["127.0.0.2"]

[[zone]]
id = "bad-codes"
zone = "zen.spamhaus.org"
type = "ip"
codes = ["127.0.0.9-127.0.0.2", "listed"]

[[zone]]
id = "no-codes"
zone = "zen.spamhaus.org"

[[zone]]
id = "ok"
zone = "zen.spamhaus.org"
codes = ["127.0.0.2"]

[[zone]]
id = "typo"
zone = "zen.spamhaus.org"
type = "uri"
mask = 2
weigth = 3
mode = "on"

[[zone]]
zone = "zen.spamhaus.org"
"""
    with pytest.raises(RuleErrors) as caught:
        compile_rules([rule_file(text)])
    found = {(p.line, p.rule_id, p.message.split(":")[0].split(" =")[0]) for p in caught.value.problems}
    assert found == {
        (2, "", "unknown key 'colour' (expected kind and [[zone]])"),
        (11, "bad-zone", "zone"),
        (18, "bad-codes", "codes"),
        (20, "no-codes", "give codes (addresses or ranges that count) or mask (bitmask zones)"),
        (25, "ok", "duplicate id (first defined in rules/dnsbl.toml"),
        (32, "typo", "type"),
        (34, "typo", "unknown key 'weigth'; expected one of codes, description, id, ipv6, mask, mode, reject, type, "
         "weight, zone"),
        (35, "typo", "mode"),
        (37, "", "id"),
    }
    lines = str(caught.value).splitlines()
    assert "rules/dnsbl.toml:11: bad-zone: zone = 'not a zone': expected a DNS name" in lines
    assert sum("bad-codes" in line for line in lines) == 2  # both bad codes, not just the first


# ---- the names asked -------------------------------------------------------------------------


def test_reversed_names() -> None:
    assert reversed_ip("127.0.0.2") == "2.0.0.127"
    assert reversed_ip("2001:db8::2") == "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"
    assert reversed_ip("IPv6:2001:db8::2") == reversed_ip("2001:db8::2")  # Postfix's spelling
    assert reversed_ip("::ffff:192.0.2.1") == "1.2.0.192"  # IPv4-mapped: the IPv4 list applies
    assert reversed_ip("fe80::1%eth0") == reversed_ip("fe80::1")  # a scoped address: the scope is local
    assert reversed_ip("") is None
    assert reversed_ip("unknown") is None


def test_domain_normalisation() -> None:
    assert normal_domain("Example.COM.") == "example.com"
    assert normal_domain("bücher.de") == "xn--bcher-kva.de"
    assert normal_domain("localhost") is None
    assert normal_domain("a..b") is None
    assert registered_domain("a.b.shop.com.vn") == "shop.com.vn"
    assert registered_domain("mail.example.co.uk") == "example.co.uk"
    assert registered_domain("x.y.example.org") == "example.org"


def test_link_domains_ask_about_the_registered_domain_under_vietnamese_suffixes() -> None:
    """id.vn, io.vn, ai.vn and the provincial names are public suffixes: the name under them is
    what a spammer registers and what a URI blocklist lists, so it is the one asked about."""
    text = (
        "https://khuyen-mai.id.vn/a http://trung.thuong.io.vn/b https://vay.nhanh.ai.vn/c"
        " https://www.xoso.hanoi.vn/d https://cong.hcm.gov.vn/e"
    )
    found = link_domains([text], skip=["bacninh.gov.vn", "gov.vn"], limit=20)
    assert found == [
        "khuyen-mai.id.vn",
        "thuong.io.vn",
        "trung.thuong.io.vn",
        "nhanh.ai.vn",
        "vay.nhanh.ai.vn",
        "xoso.hanoi.vn",  # www. is dropped: the registered domain is the one listed
    ]  # cong.hcm.gov.vn is a government name (skipped), not a lookup of gov.vn
    # the old hand-written list knew none of these: it asked about id.vn, io.vn, ai.vn, hanoi.vn
    assert not {"id.vn", "io.vn", "ai.vn", "hanoi.vn", "gov.vn"} & set(found)


def test_link_domains_from_text_and_html() -> None:
    text = "Xem https://www.Example.com/x?y=1, www.shop.com.vn. va http://user:pw@evil.example.net:8080/a"
    markup = (
        '<a href="https&#58;//click.dbltest.com/t?id=1">x</a> <img src="http://198.51.100.7/p.gif">'
        '<a href="https://sotttt.bacninh.gov.vn/">so</a> <a href="https://dichvucong.gov.vn/">dvc</a>'
    )
    assert link_domains([text, markup], OURS, 20) == [
        "example.com",
        "shop.com.vn",
        "example.net",
        "evil.example.net",
        "dbltest.com",
        "click.dbltest.com",
    ]
    assert link_domains([text], OURS, 2) == ["example.com", "shop.com.vn"]  # bounded per message
    assert link_domains(["no links here, gov.vn.evil.com is text"], OURS, 20) == []


# ---- whole messages against dnsmasq ----------------------------------------------------------


def test_listed_client_is_refused_at_mail_from(lab_dns: LabDns) -> None:
    h = harness(lab_dns.port)
    result = h.scan(SPAM / "clean-official.eml", client_ip="127.0.0.2")
    assert result.stage is Stage.MAIL
    assert result.verdict.refuses
    assert result.verdict.smtp_reply().startswith("550 5.7.1 Dia chi may gui 127.0.0.2 nam trong danh sach chan")
    assert "client 127.0.0.2 is listed by zen.spamhaus.org" in result.verdict.text
    assert result.verdict.text.isascii() and "%" not in result.verdict.text
    assert result.verdict.rule == "spamhaus-zen"
    assert lookups(h, "zen.spamhaus.org", "listed") == 1  # two zen rules, one question


def test_listed_ipv6_client_is_refused(lab_dns: LabDns) -> None:
    result = harness(lab_dns.port).scan(SPAM / "clean-official.eml", client_ip="2001:db8::2")
    assert result.stage is Stage.MAIL and result.verdict.rule == "spamhaus-zen"


def test_weighted_listing_adds_to_the_content_score(lab_dns: LabDns) -> None:
    h = harness(lab_dns.port)
    result = h.scan(SPAM / "clean-official.eml", client_ip="127.0.0.10")
    assert result.verdict.action is Action.ACCEPT
    hit = next(v for v in result.tx.hits if v.check == "dnsbl")
    assert (hit.rule, hit.action, hit.score) == ("spamhaus-pbl", Action.CONTINUE, 4.0)
    headers = dict(result.verdict.headers)
    assert headers["X-Spam-Score"] == "4.0"
    assert "dnsbl/spamhaus-pbl=4" in headers["X-Spam-Report"]
    assert "X-Spam-Flag" not in headers


def test_return_codes_that_do_not_count_are_ignored(lab_dns: LabDns) -> None:
    h = harness(lab_dns.port)
    result = h.scan(SPAM / "clean-official.eml", client_ip="127.0.0.3")  # answers 127.255.255.254
    assert result.verdict.action is Action.ACCEPT
    assert not [v for v in result.tx.hits if v.check == "dnsbl"]
    assert lookups(h, "zen.spamhaus.org", "listed") == 1  # asked and answered, but not a listing


def test_sender_domain_list_tags_the_message(lab_dns: LabDns) -> None:
    h = harness(lab_dns.port)
    result = h.scan(SPAM / "clean-official.eml", client_ip="127.0.0.3", mail_from="news@dbltest.com")
    hit = next(v for v in result.tx.hits if v.check == "dnsbl")
    assert hit.rule == "spamhaus-dbl-sender" and hit.score == 6.0
    headers = dict(result.verdict.headers)
    assert result.verdict.action is Action.ACCEPT
    assert headers["X-Spam-Flag"] == "YES" and headers["X-Spam-Score"] == "6.0"


def test_link_lists_from_text_and_html_parts(lab_dns: LabDns) -> None:
    h = harness(lab_dns.port)
    result = h.scan(SPAM / "links.eml", client_ip="127.0.0.3", mail_from="news@shop.example")
    rules = sorted(v.rule for v in result.tx.hits if v.check == "dnsbl")
    assert rules == ["spamhaus-dbl-link", "uribl-black"]  # greyonly.example answers the grey bit only
    assert result.verdict.refuses and result.verdict.rule == "spam-score"  # 6 + 5 >= 10
    names = asked(h)
    assert "dbltest.com.dbl.spamhaus.org" in names and "test.uribl.com.multi.uribl.com" in names
    assert not [n for n in names if "bacninh" in n or "gov.vn" in n]  # our own links are never asked


def test_trusted_relays_and_authenticated_users_are_not_looked_up(lab_dns: LabDns) -> None:
    h = harness(lab_dns.port, 'network.trusted_relays=["127.0.0.2/32"]')
    assert h.scan(SPAM / "links.eml", client_ip="127.0.0.2").verdict.action is Action.ACCEPT
    h2 = harness(lab_dns.port)
    result = h2.scan(SPAM / "links.eml", client_ip="127.0.0.2", auth_user="a.nguyen")
    assert result.verdict.action is Action.ACCEPT
    for each in (h, h2):
        assert asked(each) == set()
        assert each.metrics.registry.get_sample_value("govmilter_dns_lookups_total", {
            "purpose": "dnsbl", "zone": "zen.spamhaus.org", "result": "listed"}) is None


def test_monitor_zone_never_refuses(lab_dns: LabDns, tmp_path: Path) -> None:
    (tmp_path / "dnsbl.toml").write_text(
        (RULES / "dnsbl.toml").read_text().replace('reject = true', 'reject = true\nmode = "monitor"')
    )
    h = harness(lab_dns.port, rules_dir=tmp_path)
    result = h.scan(SPAM / "clean-official.eml", client_ip="127.0.0.2")
    assert result.verdict.action is Action.ACCEPT
    headers = result.verdict.headers
    assert ("X-Govmilter-Monitor", "check=dnsbl rule=spamhaus-zen would=reject") in headers
    assert dict(headers)["X-Spam-Score"] == "0.0"  # a monitored weight adds nothing
    assert "dnsbl/spamhaus-zen=10(monitor)" in dict(headers)["X-Spam-Report"]
    sample = {"check": "dnsbl", "rule": "spamhaus-zen", "mode": "monitor"}
    assert h.metrics.registry.get_sample_value("govmilter_rule_hits_total", sample) == 1


def test_silent_resolver_delays_a_message_by_at_most_the_budget(silent_dns: SilentDns) -> None:
    budget = 0.8
    h = harness(silent_dns.port, f"dns.budget={budget}")
    started = time.monotonic()
    result = h.scan(SPAM / "links.eml", client_ip="127.0.0.2", mail_from="news@dbltest.com")
    elapsed = time.monotonic() - started
    assert result.verdict.action is Action.ACCEPT  # a listed client gets through: DNS never holds mail
    assert elapsed < budget + 1.5  # the whole message, MAIL FROM and end of message together
    assert lookups(h, "zen.spamhaus.org", "timeout") == 1
    assert lookups(h, "dbl.spamhaus.org", "timeout") == 1
    assert lookups(h, "dbl.spamhaus.org", "skipped") >= 1  # the links: the budget was already spent
    assert silent_dns.received >= 2


def test_silent_resolver_is_paused_and_health_says_so(silent_dns: SilentDns) -> None:
    h = harness(silent_dns.port, "dns.budget=0.3", "dns.breaker_rounds=2", "dns.breaker_cooldown=60")
    check = next(c for c in h.pipeline.checks if isinstance(c, DnsblCheck))
    assert check.health() == {"ok": True, "resolver": "in use"}
    for _ in range(2):
        h.scan(SPAM / "clean-official.eml", client_ip="127.0.0.2")
    assert check.health() == {"ok": False, "resolver": "paused"}  # /health says degraded
    time.sleep(0.3)  # let the last retries of the silent rounds arrive
    received = silent_dns.received
    result = h.scan(SPAM / "clean-official.eml", client_ip="127.0.0.2")
    assert result.verdict.action is Action.ACCEPT
    assert lookups(h, "zen.spamhaus.org", "skipped") == 1
    assert silent_dns.received == received  # a paused resolver is not asked


def test_closed_resolver_port_skips_every_zone_at_once(tmp_path: Path) -> None:
    from support.dns_fixture import free_dual_port

    h = harness(free_dual_port(), "dns.budget=30")
    result = h.scan(SPAM / "links.eml", client_ip="127.0.0.2")
    assert result.verdict.action is Action.ACCEPT
    assert lookups(h, "zen.spamhaus.org", "error") == 1
    assert lookups(h, "multi.uribl.com", "error") >= 1


def test_answers_are_reused_across_messages(lab_dns: LabDns) -> None:
    h = harness(lab_dns.port)
    for _ in range(2):
        h.scan(SPAM / "clean-official.eml", client_ip="127.0.0.2")
    assert lookups(h, "zen.spamhaus.org", "listed") == 1
    assert lookups(h, "zen.spamhaus.org", "cached") == 1


def test_no_rules_no_lookups(lab_dns: LabDns, tmp_path: Path) -> None:
    (tmp_path / "dnsbl.toml").write_text('kind = "dnsbl"\n')
    h = harness(lab_dns.port, rules_dir=tmp_path)
    assert h.scan(SPAM / "clean-official.eml", client_ip="127.0.0.2").verdict.action is Action.ACCEPT
    assert asked(h) == set()


def test_build_reads_the_configuration() -> None:
    h = Harness(overrides=["dns.port=5300", "dns.budget=1.5", "dnsbl.max_uri_domains=3"], skip=OTHERS)
    check = next(c for c in h.pipeline.checks if isinstance(c, dnsbl.DnsblCheck))
    assert (check.client.port, check.budget, check.max_uri_domains) == (5300, 1.5, 3)  # type: ignore[attr-defined]
    assert "bacninh.gov.vn" in check.own_domains and "gov.vn" in check.own_domains


def test_a_closed_resolver_shows_in_health() -> None:
    from support.dns_fixture import free_dual_port

    h = harness(free_dual_port())
    check = next(c for c in h.pipeline.checks if isinstance(c, DnsblCheck))
    h.scan(SPAM / "clean-official.eml", client_ip="127.0.0.2")
    assert check.health() == {"ok": False, "resolver": "in use"}  # no answer at all: /health is degraded


def test_old_resolver_keys_say_where_they_went() -> None:
    from govmilter.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"\[dnsbl\] resolver moved to \[dns\] resolver"):
        load_config(None, ['dnsbl.resolver="127.0.0.1"'])
    with pytest.raises(ConfigError, match=r"\[dnsbl\] resolver_port moved to \[dns\] port"):
        load_config(None, ["dnsbl.resolver_port=53"])
    with pytest.raises(ConfigError, match=r"\[dnsbl\] budget moved to \[dns\] budget"):
        load_config(None, ["dnsbl.budget=2.0"])


def test_a_zone_with_ipv6_false_is_not_asked_about_ipv6_clients(lab_dns: LabDns, tmp_path: Path) -> None:
    zen = 'zone = "zen.spamhaus.org"'
    (tmp_path / "dnsbl.toml").write_text((RULES / "dnsbl.toml").read_text().replace(zen, zen + "\nipv6 = false"))
    h = harness(lab_dns.port, rules_dir=tmp_path)
    result = h.scan(SPAM / "clean-official.eml", client_ip="2001:db8::2")  # listed in the lab zone
    assert result.verdict.action is Action.ACCEPT
    assert not [name for name in asked(h) if "zen.spamhaus.org" in name]
    assert lookups(h, "zen.spamhaus.org", "listed") == 0
    # the same zone is still asked about IPv4 clients
    assert h.scan(SPAM / "clean-official.eml", client_ip="127.0.0.2").verdict.rule == "spamhaus-zen"


def link_message(domains: list[str]) -> bytes:
    body = " ".join(f"https://{d}/tin" for d in domains)
    return (f"From: <news@shop.example>\r\nTo: user@bacninh.gov.vn\r\nSubject: Tin\r\nMessage-ID: <t@x>\r\n\r\n"
            f"{body}\r\n").encode()  # fmt: skip


def test_a_listed_link_behind_more_domains_than_are_asked_still_costs_the_message(lab_dns: LabDns) -> None:
    """max_uri_domains bounds the lookups; it must not let filler links push a listed domain out of sight."""
    fillers = [f"filler{n}.example" for n in range(20)]
    h = harness(lab_dns.port)
    result = h.scan(link_message([*fillers, "dbltest.com"]), client_ip="127.0.0.3", mail_from="news@shop.example")
    hits = [(v.rule, v.score) for v in result.tx.hits if v.check == "dnsbl"]
    assert hits == [("too-many-link-domains", 2.0)]
    assert "dbltest.com.dbl.spamhaus.org" not in asked(h)  # past the bound: not asked, but not unseen
    within = harness(lab_dns.port).scan(link_message(fillers), client_ip="127.0.0.3", mail_from="news@shop.example")
    assert [v.rule for v in within.tx.hits if v.check == "dnsbl"] == []  # exactly 20 names: all asked
    off = harness(lab_dns.port, "dnsbl.past_limit_score=0")
    quiet = off.scan(link_message([*fillers, "dbltest.com"]), client_ip="127.0.0.3", mail_from="news@shop.example")
    assert [v.rule for v in quiet.tx.hits if v.check == "dnsbl"] == []
