"""The impersonation check on its own: without auth, monitor mode, the rule file's errors, reload, bounds."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest

from govmilter.checks.impersonation.rules import AllowEntry, compile_rules
from govmilter.model import Action, Mode
from govmilter.pipeline import CHECK_NAMES, rule_compilers
from govmilter.ruleset import RuleErrors, RuleFile, load_ruleset
from support.harness import RULES, Harness

ONLY = [name for name in CHECK_NAMES if name not in ("impersonation", "content")]  # no auth: no DNS asked


def message(frm: str, body: str = "Noi dung.", extra: str = "", html: bool = False) -> bytes:
    kind = "text/html" if html else "text/plain"
    return (f"From: {frm}\r\nTo: user@bacninh.gov.vn\r\nSubject: Thong bao\r\nMessage-ID: <c@x>\r\n{extra}"
            f"MIME-Version: 1.0\r\nContent-Type: {kind}; charset=utf-8\r\n\r\n{body}\r\n").encode()  # fmt: skip


def rules_copy(tmp_path: Path, edit: str = "", append: str = "") -> Path:
    copy = tmp_path / "rules"
    shutil.copytree(RULES, copy, ignore=shutil.ignore_patterns("tests"))
    path = copy / "impersonation.toml"
    text = path.read_text()
    if edit:
        old, new = edit.split(" => ")
        assert old in text
        text = text.replace(old, new)
    path.write_text(text + append)
    return copy


def imp_hits(result: object) -> list[tuple[str, str, str]]:
    hits = result.tx.hits  # type: ignore[attr-defined]
    return [(h.rule, h.action.value, h.mode.value) for h in hits if h.check == "impersonation" and h.rule]


def test_without_auth_only_our_own_domain_is_known_spoofed() -> None:
    h = Harness(skip=ONLY)
    own = h.scan(message("<vanthu@bacninh.gov.vn>"))
    assert own.verdict.action is Action.REJECT and own.verdict.rule == "spoofed-local-domain"
    text = own.verdict.smtp_reply()
    assert text.isascii() and "Dieu 10.2.c" in text and "ten mien bacninh.gov.vn" in text
    assert h.scan(message("<thue@gdt.gov.vn>")).verdict.action is Action.ACCEPT  # no DMARC result to judge by
    # the outbound side is not judged
    assert h.scan(message("<vanthu@bacninh.gov.vn>"), client_ip="127.0.0.1").verdict.action is Action.ACCEPT
    assert h.scan(message("<vanthu@bacninh.gov.vn>"), auth_user="vanthu").verdict.action is Action.ACCEPT


@pytest.mark.parametrize(
    "sender",
    [
        "<vanthu@bac\u200eninh.gov.vn>",  # a bidi mark IDNA refuses: a look-alike of our own name
        '"x" <a@evil.example>@bacninh.gov.vn',  # a field the parser gives up on: its addresses still count
        "=?utf-8?q?Van_thu?= <vanthu@BACNINH.GOV.VN.>",
    ],
)
def test_spellings_of_our_own_domain_are_refused(sender: str) -> None:
    result = Harness(skip=ONLY).scan(message(sender))
    assert result.verdict.action is Action.REJECT, imp_hits(result)


def test_the_reply_names_the_protected_name_when_the_spoofed_one_is_not_plain() -> None:
    result = Harness(skip=ONLY).scan(message("<vanthu@bac\u200eninh.gov.vn>"))
    assert "ten mien bacninh.gov.vn " in result.verdict.text and result.verdict.text.isascii()


def test_monitor_mode_records_and_never_refuses(tmp_path: Path) -> None:
    rules = rules_copy(tmp_path, 'finding = "lookalike-gov-join"\naction = "reject" => '
                                 'finding = "lookalike-gov-join"\nmode = "monitor"\naction = "reject"')  # fmt: skip
    h = Harness(skip=ONLY, rules_dir=rules)
    result = h.scan(message("<a@bacninh-gov.vn>"))
    assert result.verdict.action is Action.ACCEPT
    assert ("lookalike-gov-join", "reject", "monitor") in imp_hits(result)
    value = h.metrics.registry.get_sample_value(
        "govmilter_impersonation_hits_total", {"kind": "lookalike-gov-join", "protected": "bacninh.gov.vn"}
    )
    assert value == 1


def test_a_protected_body_added_to_the_file_is_judged_after_a_reload(tmp_path: Path) -> None:
    h = Harness(skip=ONLY)
    assert h.scan(message("<a@laichau-gov.vn>")).verdict.action is Action.ACCEPT
    rules = rules_copy(tmp_path, 'protected = [ => protected = [\n    "laichau.gov.vn",')
    h.ruleset = load_ruleset(rules, rule_compilers())  # what the store's reload swaps in
    assert h.scan(message("<a@laichau-gov.vn>")).verdict.rule == "lookalike-gov-join"


def test_links_past_max_links_are_not_judged_and_the_message_scores_for_them() -> None:
    body = "Xem http://203.0.113.9/a va https://bit.ly/x"
    assert {r for r, _, _ in imp_hits(Harness(skip=ONLY).scan(message("<a@x.example>", body)))} == {
        "link-ip-address", "link-shortener"}  # fmt: skip
    one = Harness(["impersonation.max_links=1"], skip=ONLY).scan(message("<a@x.example>", body))
    assert [r for r, _, _ in imp_hits(one)] == ["link-ip-address", "too-many-links"]
    assert [h.score for h in one.tx.hits if h.rule == "too-many-links"] == [2.0]
    repeated = message("<a@x.example>", "http://203.0.113.9/a " * 5)
    copies = Harness(["impersonation.max_links=1"], skip=ONLY).scan(repeated)
    assert [r for r, _, _ in imp_hits(copies)] == ["link-ip-address"]  # copies of one link count once
    none = Harness(["impersonation.max_links=0"], skip=ONLY).scan(message("<a@x.example>", body))
    assert imp_hits(none) == []  # 0: links are not judged at all (stated in the config)


def test_a_lookalike_link_behind_max_links_harmless_ones_still_costs_the_message() -> None:
    """The bound keeps the cost of hostile HTML down; it must not hide what lies past it."""
    harmless = " ".join(f'<a href="https://news{n}.example/p">Tin {n}</a>' for n in range(200))
    hidden = '<a href="https://bacninh-gov.vn/dang-nhap">Dang nhap</a>'
    hits = imp_hits(Harness(skip=ONLY).scan(message("<tin@news.example>", harmless + hidden, html=True)))
    assert [r for r, _, _ in hits] == ["too-many-links"]
    within = imp_hits(Harness(skip=ONLY).scan(message("<tin@news.example>", harmless[:2000] + hidden, html=True)))
    assert "too-many-links" not in [r for r, _, _ in within] and within  # judged when within the bound


def test_a_data_link_counts_but_an_inline_data_image_does_not() -> None:
    h = Harness(skip=ONLY)
    image = '<img src="data:image/png;base64,iVBORw0KGgo=">'
    assert imp_hits(h.scan(message("<a@x.example>", image, html=True))) == []
    link = '<a href="data:text/html;base64,PGgxPg==">Mo</a>'
    assert [r for r, _, _ in imp_hits(h.scan(message("<a@x.example>", link, html=True)))] == ["link-data-url"]


def test_display_names_match_whole_words_without_diacritics() -> None:
    h = Harness(skip=ONLY)
    for name in ("Cuc Thue", "CỤC THUẾ Bắc Ninh", "Phòng HC - Sở Tài chính", "cục   thuế"):
        assert [r for r, _, _ in imp_hits(h.scan(message(f'"{name}" <x@gmail.com>')))] == ["display-name-state-body"]
    for name in ("Nguyen Van So", "Cuc Thuetu", "Tu van thue"):
        assert imp_hits(h.scan(message(f'"{name}" <x@gmail.com>'))) == [], name


def test_rule_file_errors_name_the_file_and_line() -> None:
    text = (
        'kind = "impersonation"\nprotected = ["gdt.gov.vn", "not a domain"]\nshorteners = ["bit.ly"]\n'
        'near_distance = 9\n[[allow]]\nid = "x"\ndomains = ["a.gov.vn"]\nnetworks = ["300.1.2.3/24"]\n'
        '[[rule]]\nid = "r1"\nfinding = "lookalike-everything"\naction = "reject"\n'
        '[[rule]]\nid = "r2"\nfinding = "display-name"\nplaces = ["from"]\nscore = 1\n'
        '[[rule]]\nid = "r3"\nfinding = "link-ip"\n'
    )
    import tomllib

    with pytest.raises(RuleErrors) as error:
        compile_rules([RuleFile("rules/impersonation.toml", text, tomllib.loads(text))])
    found = [str(p) for p in error.value.problems]
    expect = [
        "rules/impersonation.toml:2: protected: 'not a domain' is not a domain name",
        "rules/impersonation.toml:4: near_distance = 9",
        "rules/impersonation.toml:8: x: networks: '300.1.2.3/24' is not an address or network",
        "rules/impersonation.toml:11: r1: finding = 'lookalike-everything'",
        "rules/impersonation.toml:16: r2: places is for lookalike-* findings only",
        "rules/impersonation.toml:18: r3: a rule with action = 'score' needs a non-zero score",
    ]
    for start in expect:
        assert any(line.startswith(start) for line in found), (start, found)


def test_a_list_set_in_two_files_is_an_error() -> None:
    one = RuleFile("a.toml", 'protected = ["gdt.gov.vn"]\n', {"kind": "impersonation", "protected": ["gdt.gov.vn"]})
    two = RuleFile("b.toml", 'protected = ["x.gov.vn"]\n', {"kind": "impersonation", "protected": ["x.gov.vn"]})
    with pytest.raises(RuleErrors, match=r"protected is already set in a\.toml"):
        compile_rules([one, two])


def test_an_allow_entry_needs_its_network_and_its_dkim_pass() -> None:
    import ipaddress

    entry = AllowEntry("n", ("bantin.bacninh.gov.vn",), (ipaddress.ip_network("198.51.100.0/24"),),
                       ("bantin.bacninh.gov.vn",))  # fmt: skip
    assert entry.allows("bantin.bacninh.gov.vn", "198.51.100.9", ["bantin.bacninh.gov.vn"])
    assert not entry.allows("bantin.bacninh.gov.vn", "198.51.100.9", [])  # no DKIM pass
    assert not entry.allows("bantin.bacninh.gov.vn", "203.0.113.9", ["bantin.bacninh.gov.vn"])
    assert not entry.allows("bacninh.gov.vn", "198.51.100.9", ["bantin.bacninh.gov.vn"])  # the parent is not allowed
    assert entry.allows("x.bantin.bacninh.gov.vn", "198.51.100.9", ["bantin.bacninh.gov.vn"])


def test_the_shipped_file_refuses_the_shapes_and_scores_the_rest() -> None:
    compiled = load_ruleset(RULES, rule_compilers()).get("impersonation")
    by_finding = {r.finding: r for r in compiled.rules}
    assert {f for f, r in by_finding.items() if r.action == "reject"} == {
        "spoofed-local",
        "spoofed-government",
        "lookalike-prefix",
        "lookalike-confusable",
        "lookalike-gov-join",
    }
    assert all(r.mode is Mode.ENFORCE for r in compiled.rules)
    assert {"gdt.gov.vn", "chinhphu.vn"} <= set(compiled.protected)


def test_a_refusal_without_a_protected_name_cites_the_government_name(tmp_path: Path) -> None:
    rules = rules_copy(tmp_path, 'finding = "link-ip"\nscore = 2.0 => finding = "link-ip"\naction = "reject"')
    result = Harness(skip=ONLY, rules_dir=rules).scan(message("<a@x.example>", "Xem http://203.0.113.9/a"))
    assert result.verdict.rule == "link-ip-address"
    assert "ten mien gov.vn " in result.verdict.text and "203.0.113.9" not in result.verdict.text


def test_a_field_past_what_is_judged_scores_instead_of_hiding_the_rest() -> None:
    """A sender cannot hide a look-alike behind 50 harmless domains or 16 384 characters: past the
    bound the rest is not read, and the message scores for it (rule too-many-to-judge)."""
    h = Harness(skip=ONLY)
    harmless = ", ".join(f"<a{i}@partner{i}.example>" for i in range(60))
    crowd = h.scan(message("<a@x.example>", extra=f"Reply-To: {harmless}, <thue@bacninh-gov.vn>\r\n"))
    assert ("too-many-to-judge", "continue", "enforce") in imp_hits(crowd)
    long_from = h.scan(message(f'"{"Thong bao " * 1700}" <a@x.example>'))
    assert ("too-many-to-judge", "continue", "enforce") in imp_hits(long_from)
    # at the bound, not past it: nothing for it
    fifty = ", ".join(f"<a{i}@partner{i}.example>" for i in range(50))
    assert imp_hits(h.scan(message("<a@x.example>", extra=f"Reply-To: {fifty}\r\n"))) == []


def attached_page(page: str, content_type: str, filename: str, codec: str = "utf-8") -> bytes:
    encoded = base64.encodebytes(page.encode(codec)).decode().replace("\n", "\r\n")
    return (
        "From: <ketoan@partner.example>\r\nTo: user@bacninh.gov.vn\r\nSubject: Hoa don\r\nMessage-ID: <p@x>\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nXem hoa don dinh kem.\r\n"
        f'--b\r\nContent-Type: {content_type}\r\nContent-Disposition: attachment; filename="{filename}"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{encoded}--b--\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("content_type", "filename"),
    [("text/html", "hoa-don.html"), ("application/octet-stream", "hoa-don.HTM"), ("image/svg+xml", "logo.svg")],
)
def test_a_lookalike_link_moved_into_an_attached_page_is_still_judged(content_type: str, filename: str) -> None:
    """Phishing moves its link from the body into invoice.html: the page is read as the body is."""
    page = '<html><body><a href="https://bacninh-gov.vn/dang-nhap">Dang nhap</a></body></html>'
    result = Harness(skip=ONLY).scan(attached_page(page, content_type, filename))
    assert result.verdict.action is Action.REJECT and result.verdict.rule == "lookalike-gov-join"
    [attachment] = [p for p in result.tx.facts().parts if p.filename == filename]
    assert attachment.is_attachment  # still counted and typed as an attachment


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-8-sig"])
def test_an_attached_page_is_read_in_the_encoding_its_byte_order_mark_says(codec: str) -> None:
    """A browser reads a UTF-16 page by its mark, whatever charset the part declares (none here)."""
    mark = "\ufeff" if codec == "utf-16-be" else ""  # utf-16 and utf-8-sig write their mark themselves
    page = mark + '<html><body><a href="https://bacninh-gov.vn/dang-nhap">Dang nhap</a></body></html>'
    result = Harness(skip=ONLY).scan(attached_page(page, "text/html", "hoa-don.html", codec))
    assert result.verdict.action is Action.REJECT and result.verdict.rule == "lookalike-gov-join"
