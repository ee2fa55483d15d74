"""Attacks on the `impersonation` check: a hostile sender posing as the state (a fake tax notice from a
look-alike of bacninh.gov.vn, a spoofed own-domain From, a deceptive link), and an officer whose
legitimate mail must not be refused. Each test states the hostile input and what the gateway does.

Without auth (the Harness below skips it) only our own domain, bacninh.gov.vn, is known to be
spoofed; the tests of the DMARC interplay run auth against a private dnsmasq: hanoi.gov.vn publishes
SPF and no DMARC, gdt.gov.vn SPF and DMARC p=none, evil.example (the attacker's) SPF for 127.0.0.2
(spf.evil.example's SPF includes a slow name), and every name under slow.example and dead.gov.vn is
asked of a resolver that never answers (timeouts, temperror).
"""

from __future__ import annotations

import base64
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from govmilter.checks.auth.check import AuthCheck
from govmilter.checks.impersonation.names import Protected
from govmilter.model import AUTH_SUMMARY_KEY, Action, AuthSummary
from govmilter.offline import ScanResult
from govmilter.pipeline import CHECK_NAMES
from stack import Dns, free_dns_port
from support.harness import RULES, Harness

ONLY = [name for name in CHECK_NAMES if name not in ("impersonation", "content")]  # no auth: no DNS asked
WITH_AUTH = [name for name in CHECK_NAMES if name not in ("auth", "impersonation", "content")]
ATTACKER = "127.0.0.2"  # evil.example's SPF allows it; it is in no government SPF record


def message(frm: str, body: str = "Noi dung.", extra: str = "", html: bool = False) -> bytes:
    kind = "text/html" if html else "text/plain"
    return (f"From: {frm}\r\nTo: user@bacninh.gov.vn\r\nSubject: Thong bao thue\r\nMessage-ID: <atk@x>\r\n{extra}"
            f"MIME-Version: 1.0\r\nContent-Type: {kind}; charset=utf-8\r\n\r\n{body}\r\n").encode()  # fmt: skip


def encoded(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


def hits(result: ScanResult) -> list[str]:
    return [h.rule for h in result.tx.hits if h.check == "impersonation" and h.rule]


@pytest.fixture(scope="module")
def plain() -> Harness:
    return Harness(skip=ONLY)


# ---- From shapes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sender",
    [
        encoded("thongbao@bacninh.gov.vn"),  # the whole From an encoded word: no address, a reader sees ours
        "Cuc Thue <" + encoded("thongbao@bacninh.gov.vn") + ">",  # an encoded word in place of the address
        encoded("Cục Thuế <thongbao@bacninh.gov.vn>"),  # name and address in one encoded word
    ],
    ids=["whole", "in-angle", "name-and-address"],
)
def test_an_encoded_word_that_stands_for_the_from_address_is_our_spoofed_domain(plain: Harness, sender: str) -> None:
    result = plain.scan(message(sender))
    assert result.verdict.action is Action.REJECT, hits(result)
    assert result.verdict.rule == "spoofed-local-domain"


def test_an_encoded_word_beside_a_real_address_stays_a_display_name(plain: Harness) -> None:
    """The officer's side: the documented reading of an encoded `<x@gov.vn>` inside a name is unchanged."""
    result = plain.scan(message(encoded("thongbao@bacninh.gov.vn") + " <x@gmail.com>"))
    assert result.verdict.action is Action.ACCEPT and hits(result) == ["display-name-state-body"]


def test_an_encoded_reply_to_address_is_judged_for_diversion(plain: Harness) -> None:
    result = plain.scan(message("<thue@bacninh.gov.vn>", extra=f"Reply-To: {encoded('hoantra.thue@gmail.com')}\r\n"))
    assert "reply-diversion" in hits(result)


@pytest.mark.parametrize(
    "name",
    [
        "thongbao@bacninh\u3002gov\u3002vn",  # IDN full stops: a reader sees bacninh.gov.vn
        "thongbao@bacninh\uff0egov\uff0evn",
        "CụcThuế Bắc Ninh",  # words run together, each capitalised
        "UBNDtỉnh Bắc Ninh",
        "U.B.N.D tinh Bac Ninh",  # spaced capitals, plain ASCII
        "thongbao@\u202env.vog.hnincab\u202c",  # a right-to-left override shows thongbao@bacninh.gov.vn
    ],
)
def test_display_name_spellings_still_name_the_state(plain: Harness, name: str) -> None:
    result = plain.scan(message(f'"{name}" <x@gmail.com>'))
    assert hits(result) == ["display-name-state-body"], name


def test_a_group_name_is_read_as_the_display_name(plain: Harness) -> None:
    """`From: Cục Thuế: x@gmail.com;` (RFC 6854 groups): mail clients show the group's name."""
    assert hits(plain.scan(message("Cục Thuế Bắc Ninh: x@gmail.com;"))) == ["display-name-state-body"]


@pytest.mark.parametrize("name", ["Tư vấn Thuế Minh Anh", "McDonald Việt Nam", "Hồ sơ y tế điện tử", "ABCtech"])
def test_display_names_that_name_no_state_body_stay_clean(plain: Harness, name: str) -> None:
    assert hits(plain.scan(message(f'"{name}" <x@gmail.com>'))) == [], name


# ---- domain shapes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sender", "rule"),
    [
        ("<thongbao@gov.vn-thue.com>", "lookalike-prefix"),  # a protected name going on with a hyphen
        ("<thongbao@bacninh.gov.vn-thue.com>", "lookalike-prefix"),
        ("<thongbao@bacninh.gov-vn.com>", "lookalike-gov-join"),  # body . gov-vn on another registered domain
        ("<thongbao@gdt.govvn.info>", "lookalike-gov-join"),
    ],
)
def test_a_protected_name_that_goes_on_past_a_label_edge_is_a_lookalike(plain: Harness, sender: str,
                                                                        rule: str) -> None:  # fmt: skip
    result = plain.scan(message(sender))
    assert result.verdict.action is Action.REJECT and result.verdict.rule == rule, hits(result)


@pytest.mark.parametrize("sender", ["<thue@gdt.com.vn>", "<thue@gdt.vn>", "<taichinh@mof.edu.vn>"])
def test_a_short_body_name_on_another_suffix_is_a_near_miss(plain: Harness, sender: str) -> None:
    """gdt (the tax department) is too short for edit distances; its very name elsewhere still counts."""
    assert hits(plain.scan(message(sender))) == ["lookalike-near"], sender


@pytest.mark.parametrize("sender", ["<a@gdtx.vn>", "<a@mofa.com>", "<a@gdt.com>"])
def test_other_short_names_are_no_near_miss(plain: Harness, sender: str) -> None:
    assert hits(plain.scan(message(sender))) == [], sender


@pytest.mark.parametrize("sender", ["<a@egov.vn-tech.com>", "<a@bacninh.govtech.vn>", "<a@mygov.vn>"])
def test_names_that_only_hold_gov_are_not_lookalikes(plain: Harness, sender: str) -> None:
    result = plain.scan(message(sender))
    assert result.verdict.action is Action.ACCEPT, hits(result)


# ---- deceptive links -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "anchor",
    [
        "Truy cập bacninh.gov.vn để tra cứu",  # words around the government name
        "Cổng thông tin https://bacninh.gov.vn/thue",
        "bacninh\u3002gov\u3002vn",  # IDN full stops
        "bacninh.g\u043ev.vn",  # a Cyrillic о: reads as the government name
        'bacninh<img src="x.gif" width="0">.gov.vn',  # an invisible image inside the name
        "\u202env.vog.hnincab",  # a right-to-left override: shown as bacninh.gov.vn
    ],
)
def test_link_text_showing_a_government_name_among_other_text(plain: Harness, anchor: str) -> None:
    body = f'<p><a href="https://thue-online.example/login">{anchor}</a></p>'
    assert "link-text-government" in hits(plain.scan(message("<a@x.example>", body, html=True))), anchor


@pytest.mark.parametrize(
    "anchor", ["bacninh.gov.vn", "Dịch vụ công của bacninh.gov.vn"], ids=["name", "among-words"]
)
def test_a_state_name_on_a_link_to_another_state_site_is_no_finding(plain: Harness, anchor: str) -> None:
    """The officer's side: the province's mail links to the national portal with the province's name."""
    body = f'<a href="https://dichvucong.gov.vn/p/home">{anchor}</a>'
    assert hits(plain.scan(message("<a@x.example>", body, html=True))) == []


def test_a_backslash_before_the_at_sign_ends_the_host_as_browsers_read_it(plain: Harness) -> None:
    """https://thue-online.example\\@bacninh.gov.vn/ goes to thue-online.example, not to the government."""
    body = '<a href="https://thue-online.example\\@bacninh.gov.vn/dang-nhap">bacninh.gov.vn</a>'
    assert hits(plain.scan(message("<a@x.example>", body, html=True))) == ["link-text-government"]


def test_link_text_that_merely_mentions_words_is_no_mismatch(plain: Harness) -> None:
    body = '<a href="https://shop.example/a">Xem chi tiết. Bấm vào đây</a> <a href="https://bacninh.gov.vn/x">' \
           "Văn bản của bacninh.gov.vn</a>"  # fmt: skip
    assert hits(plain.scan(message("<a@x.example>", body, html=True))) == []


@pytest.mark.parametrize("html", [False, True], ids=["text", "html"])
def test_a_government_name_as_the_user_info_of_a_link(plain: Harness, html: bool) -> None:
    """https://bacninh.gov.vn@evil.example/ shows our name and goes to evil.example."""
    url = "https://bacninh.gov.vn@thue-online.example/dang-nhap"
    body = f'<a href="{url}">Dang nhap</a>' if html else f"Dang nhap: {url}"
    assert "link-text-government" in hits(plain.scan(message("<a@x.example>", body, html=html)))


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("https://bacninh%2Egov%2Evn.thue-online.example/x", "lookalike-prefix"),  # browsers decode the host
        ("https://%62acninh-gov.vn/x", "lookalike-gov-join"),
        ("http://3405803786/x", "link-ip-address"),  # 203.0.113.10 as one number
        ("http://0xcb.0x00.0x71.0x0a/x", "link-ip-address"),  # hexadecimal parts
        ("http://0313.0.0161.012/x", "link-ip-address"),  # octal parts
        ("http://203.113.10/x", "link-ip-address"),  # three parts: the last fills two bytes
        ("http://[2001:db8::1]/x", "link-ip-address"),  # an IPv6 literal
    ],
)
def test_hosts_browsers_read_differently_from_their_text(plain: Harness, url: str, rule: str) -> None:
    assert rule in hits(plain.scan(message("<a@x.example>", f"Xem {url} ngay"))), url


@pytest.mark.parametrize(
    "href",
    [
        "//thue-online.example/login",  # protocol-relative: the page's scheme
        "https:\\\\thue-online.example\\login",  # backslashes read as slashes
        "https:/thue-online.example/login",
        "https:thue-online.example/login",  # no slash at all
        "ht&#9;tps://thue-online.example/login",  # a tab inside the scheme, dropped by browsers
        "HtTpS://thue-online.example/login",
    ],
)
def test_hrefs_browsers_follow_though_they_are_not_written_as_urls(plain: Harness, href: str) -> None:
    body = f'<a href="{href}">bacninh.gov.vn</a>'
    assert hits(plain.scan(message("<a@x.example>", body, html=True))) == ["link-text-government"], href


def test_a_link_with_entities_in_its_query_is_judged_once(plain: Harness) -> None:
    body = '<a href="https://shop.example/?a=1&amp;b=2">tin-tuc.example</a>'
    assert hits(plain.scan(message("<a@x.example>", body, html=True))) == ["link-text-mismatch"]


@pytest.mark.parametrize(
    "href",
    [
        "&#100;ata:text/html;base64,PGgxPg==",
        "da&#x09;ta:text/html,x",
        "d\nata:text/html,x",
        "DATA:text/html,x",
        "&#0000000000000100;&#0000000000000097;&#0000000000000116;&#0000000000000097;:text/html,x",  # zeros
    ],
)
def test_a_data_link_spelled_with_entities_or_white_space(plain: Harness, href: str) -> None:
    body = f'<a href="{href}">Mo thong bao</a>'
    assert hits(plain.scan(message("<a@x.example>", body, html=True))) == ["link-data-url"], href


def test_repeated_links_do_not_push_the_deceptive_one_past_max_links(plain: Harness) -> None:
    """200 copies of one honest link, then the phishing link: copies are judged once and count once."""
    honest = '<a href="https://bacninh.gov.vn/">bacninh.gov.vn</a> ' * 250
    body = honest + '<a href="https://thue-online.example/login">thuedientu.gdt.gov.vn</a>'
    assert "link-text-government" in hits(plain.scan(message("<a@x.example>", body, html=True)))


# ---- the allow-list ----------------------------------------------------------------------------


def test_an_allowed_outside_sender_cannot_add_another_protected_author(tmp_path: Path) -> None:
    """The newsletter service may send as bantin.bacninh.gov.vn; a second author of our own domain
    beside it (every customer of the shared service can do that) is still judged."""
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules, ignore=shutil.ignore_patterns("tests"))
    with (rules / "impersonation.toml").open("a") as handle:
        handle.write('\n[[allow]]\nid = "bantin"\ndomains = ["bantin.bacninh.gov.vn"]\n'
                     'networks = ["198.51.100.0/24"]\n')  # fmt: skip
    h = Harness(skip=ONLY, rules_dir=rules)
    legit = h.scan(message("<tin@bantin.bacninh.gov.vn>"), client_ip="198.51.100.9")
    assert legit.verdict.action is Action.ACCEPT
    forged = h.scan(message("<tin@bantin.bacninh.gov.vn>, <giamdoc@bacninh.gov.vn>"), client_ip="198.51.100.9")
    assert forged.verdict.action is Action.REJECT and forged.verdict.rule == "spoofed-local-domain"


# ---- bounds --------------------------------------------------------------------------------------


def test_a_reply_to_with_thousands_of_domains_is_judged_within_a_bound(
    plain: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """5 000 distinct look-alike-ish domains in Reply-To: the judge (an edit distance per protected body)
    runs for a bounded number of them, and a look-alike among the first ones is still found."""
    calls = []
    judge = Protected.judge

    def counting(self: Protected, raw: str):  # type: ignore[no-untyped-def]
        calls.append(raw)
        return judge(self, raw)

    monkeypatch.setattr(Protected, "judge", counting)
    many = ", ".join(f"u{i}@bacnlnh{i}.example" for i in range(5000))
    result = plain.scan(message("<a@x.example>", extra=f"Reply-To: hoan.thue@bacninh-gov.vn, {many}\r\n"))
    assert "lookalike-gov-join" in hits(result)
    assert len(calls) <= 200, len(calls)


def test_from_fields_are_read_up_to_a_stated_bound(plain: Harness) -> None:
    """Stated policy (docs/impersonation.md): the From fields are read up to FIELD_CHARS characters
    together. Our own address first is refused whatever follows; one past the bound is not read
    (a reader sees the first addresses; auth's DMARC gives permerror past 10 author domains)."""
    filler = ", ".join(f"u{i}@partner{i}.example" for i in range(1000))  # about 25 000 characters
    assert plain.scan(message(f"<vanthu@bacninh.gov.vn>, {filler}")).verdict.action is Action.REJECT
    assert plain.scan(message(f"{filler}, <vanthu@bacninh.gov.vn>")).verdict.action is Action.ACCEPT


# ---- auth interplay: a real DMARC evaluation ----------------------------------------------------


@pytest.fixture(scope="module")
def zone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dns]:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))  # bound, never read: every query there times out
    txt = (
        ("hanoi.gov.vn", "v=spf1 ip4:203.0.113.20 -all"),  # no DMARC record
        ("gdt.gov.vn", "v=spf1 ip4:203.0.113.10 -all"),
        ("_dmarc.gdt.gov.vn", "v=DMARC1; p=none"),
        ("evil.example", f"v=spf1 ip4:{ATTACKER} -all"),
        ("spf.evil.example", "v=spf1 include:x.slow.example -all"),  # its SPF waits on the silent DNS
    )
    port = silent.getsockname()[1]
    dns = Dns(tmp_path_factory.mktemp("impatk") / "dns", free_dns_port(), records=(), ttl=300, txt=txt,
              options=[f"--server=/{name}/127.0.0.1#{port}" for name in ("slow.example", "dead.gov.vn")])  # fmt: skip
    dns.start()
    yield dns
    dns.stop()
    silent.close()


def auth_harness(zone: Dns, *overrides: str) -> Harness:
    """A pipeline with auth and its own DNS client (cache, breaker): tests do not see each other's lookups."""
    return Harness([f"dns.port={zone.port}", "dns.budget=1.0", *overrides], skip=WITH_AUTH)


@pytest.fixture
def authed(zone: Dns) -> Harness:
    return auth_harness(zone, "dns.breaker_rounds=0")  # the silent names here never pause the resolver


def test_a_dns_failure_of_another_author_does_not_excuse_a_government_spoof(authed: Harness) -> None:
    """From: the tax office of Ha Noi (no DMARC record, so an aligned SPF or DKIM pass is needed) and a
    second author under the attacker's own slow DNS: DMARC says temperror for the slow one."""
    result = authed.scan(message("<thue@hanoi.gov.vn>, <x@a.slow.example>"), mail_from="bounce@evil.example",
                         client_ip=ATTACKER)  # fmt: skip
    summary = result.tx.scratch.get(AUTH_SUMMARY_KEY)
    assert isinstance(summary, AuthSummary) and summary.dmarc == "temperror", summary
    assert result.verdict.action is Action.REJECT and result.verdict.rule == "spoofed-government-domain", hits(result)


@pytest.mark.parametrize("mail_from", ["bounce@a.slow.example", "bounce@spf.evil.example"], ids=["sender", "include"])
def test_a_dns_budget_spent_on_the_senders_spf_does_not_excuse_a_government_spoof(
    zone: Dns, mail_from: str
) -> None:
    """The attacker's MAIL FROM domain (or an SPF include) never answers: SPF, asked first, spends the
    message's DNS budget, and DMARC for the forged gdt.gov.vn is a temperror without having asked."""
    h = auth_harness(zone, "dns.breaker_rounds=0")
    result = h.scan(message("Tong cuc Thue <thue@gdt.gov.vn>"), mail_from=mail_from, client_ip=ATTACKER)
    summary = result.tx.scratch.get(AUTH_SUMMARY_KEY)
    assert isinstance(summary, AuthSummary) and summary.dmarc == "temperror", summary
    assert result.verdict.action is Action.REJECT and result.verdict.rule == "spoofed-government-domain", hits(result)


def test_a_fake_signature_of_the_government_domain_after_a_spent_budget_does_not_excuse_a_spoof(zone: Dns) -> None:
    """The same spent budget, plus a DKIM-Signature with d=gdt.gov.vn whose key is then never asked: a
    DKIM temperror of the forged domain itself. gdt.gov.vn's DNS answers when asked again: not its DNS
    failing, so no excuse; unverifiable, so deferred (451), never accepted."""
    fake = "DKIM-Signature: v=1; a=rsa-sha256; d=gdt.gov.vn; s=thue2026; h=from; bh=AAAA; b=AAAA\r\n"
    h = auth_harness(zone, "dns.breaker_rounds=0")
    result = h.scan(fake.encode() + message("<thue@gdt.gov.vn>"), mail_from="bounce@a.slow.example",
                    client_ip=ATTACKER)  # fmt: skip
    summary = result.tx.scratch.get(AUTH_SUMMARY_KEY)
    assert isinstance(summary, AuthSummary) and ("temperror", "gdt.gov.vn") in summary.dkim, summary
    assert result.verdict.action is Action.TEMPFAIL and result.verdict.rule == "spoofed-government-domain"


def test_a_dns_failure_of_the_government_domain_itself_still_never_refuses(authed: Harness) -> None:
    """The officer's side: dead.gov.vn's own DNS does not answer; its mail is not refused by this check."""
    result = authed.scan(message("<vp@dead.gov.vn>"), mail_from="vp@dead.gov.vn", client_ip="203.0.113.50")
    summary = result.tx.scratch.get(AUTH_SUMMARY_KEY)
    assert isinstance(summary, AuthSummary) and summary.dmarc == "temperror", summary
    assert result.verdict.action is Action.ACCEPT, hits(result)


def test_the_attackers_silent_names_do_not_pause_the_resolver(zone: Dns) -> None:
    """Messages whose MAIL FROM domain never answers used to make the shared resolver look silent: its
    breaker paused every lookup (the blocklists' too) for [dns] breaker_cooldown. A sender's names no
    longer count: after them a forged gdt.gov.vn is still refused and Ha Noi's real mail accepted."""
    h = auth_harness(zone, "dns.breaker_rounds=1", "dns.breaker_cooldown=60")
    real = message("<vp@hanoi.gov.vn>")
    for _ in range(3):
        h.scan(message("<a@evil.example>"), mail_from="bounce@a.slow.example", client_ip=ATTACKER)
    auth = next(c for c in h.pipeline.checks if isinstance(c, AuthCheck))
    assert not auth.resolver.resolver_down()  # type: ignore[attr-defined]
    forged = h.scan(message("<thue@gdt.gov.vn>"), mail_from="bounce@evil.example", client_ip=ATTACKER)
    assert forged.verdict.action is Action.REJECT and forged.verdict.rule == "spoofed-government-domain"
    assert h.scan(real, mail_from="vp@hanoi.gov.vn", client_ip="203.0.113.20").verdict.action is Action.ACCEPT


def test_a_paused_resolver_defers_a_government_spoof_and_never_refuses_real_mail(zone: Dns) -> None:
    """Our resolver paused (its breaker opened by silent blocklist rounds), every DMARC is a temperror.
    A forged gdt.gov.vn sent then is deferred (451), not accepted; Ha Noi's real mail from a host whose
    SPF is not read yet (DMARC none from the cache) is deferred too, not refused."""
    h = auth_harness(zone, "dns.breaker_rounds=1", "dns.breaker_cooldown=60")
    real = message("<vp@hanoi.gov.vn>")
    assert h.scan(real, mail_from="vp@hanoi.gov.vn", client_ip="203.0.113.20").verdict.action is Action.ACCEPT
    auth = next(c for c in h.pipeline.checks if isinstance(c, AuthCheck))
    auth.resolver.lookup(["2.0.0.127.bl.slow.example"], 0.3)  # type: ignore[attr-defined]  # a silent round
    assert auth.resolver.resolver_down()  # type: ignore[attr-defined]
    forged = h.scan(message("<thue@gdt.gov.vn>"), mail_from="bounce@evil.example", client_ip=ATTACKER)
    assert forged.verdict.action is Action.TEMPFAIL and forged.verdict.rule == "spoofed-government-domain"
    text = forged.verdict.smtp_reply()
    assert forged.verdict.code == "451" and text.isascii() and "gdt.gov.vn" in text and "Dieu 10.2.c" in text
    again = h.scan(real, mail_from="vp@mail.hanoi.gov.vn", client_ip="203.0.113.20")
    assert again.verdict.action is Action.TEMPFAIL, hits(again)
    # a sure refusal is not put off: a look-alike link in the same forged mail still refuses at once
    sure = h.scan(message("<thue@gdt.gov.vn>", "Xem https://gdt.gov.vn.thue-online.example/"),
                  mail_from="bounce@evil.example", client_ip=ATTACKER)  # fmt: skip
    assert sure.verdict.action is Action.REJECT and sure.verdict.rule == "lookalike-prefix"


def test_a_forged_authentication_result_does_not_count(authed: Harness) -> None:
    """Caught before: the summary is what auth computed, never a header of the message."""
    forged = ("Authentication-Results: gw.bacninh.gov.vn; dmarc=pass header.from=gdt.gov.vn; spf=pass "
              "smtp.mailfrom=gdt.gov.vn\r\nARC-Authentication-Results: i=1; gw; dmarc=pass\r\n")  # fmt: skip
    result = authed.scan(message("<thue@gdt.gov.vn>", extra=forged), mail_from="bounce@evil.example",
                         client_ip=ATTACKER)  # fmt: skip
    assert result.verdict.action is Action.REJECT and result.verdict.rule == "spoofed-government-domain"


def test_a_dkim_or_spf_pass_of_another_domain_does_not_authenticate_a_government_one(authed: Harness) -> None:
    """Caught before: hanoi.gov.vn has no DMARC; the attacker's SPF pass is for evil.example."""
    result = authed.scan(message("<thue@hanoi.gov.vn>"), mail_from="bounce@evil.example", client_ip=ATTACKER)
    assert result.verdict.action is Action.REJECT and result.verdict.rule == "spoofed-government-domain"


def test_an_authenticated_government_sender_is_never_refused_by_this_check(authed: Harness) -> None:
    """The officer's side (caught before): Ha Noi's own server (SPF aligned, no DMARC record) sends a
    link that is a look-alike: found and scored, not refused."""
    result = authed.scan(message("<vp@hanoi.gov.vn>", "Xem https://bacninh.gov.vn.thue-online.example/"),
                         mail_from="vp@hanoi.gov.vn", client_ip="203.0.113.20")  # fmt: skip
    assert result.verdict.action is Action.ACCEPT, hits(result)
    assert "lookalike-prefix" in hits(result)  # found, scored, not refused
