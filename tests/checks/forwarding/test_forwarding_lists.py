"""List copies and labels: traces inside list mail do not refuse it, a label never exempts.

Issue 14: a post carrying a forwarding trace made every list copy to the province
refused (and the list unsubscribed its members); a multipart/report label from a
non-null sender exempted any message. Here, the pure rules (what a list sender is,
where a list copy's boundary lies) and the check's verdicts on many variants of each
class: header order, name case, folding, several traces, list markers alone and
together, attacks with forged markers.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from govmilter.checks.forwarding.traces import (
    HeaderIndex,
    Trace,
    authored_by,
    exemption,
    header_traces,
    is_report,
    list_copy,
    list_marker,
    list_sender,
)
from govmilter.model import Action
from govmilter.offline import ScanResult
from govmilter.pipeline import CHECK_NAMES
from support.harness import RULES, Harness

ONLY_FORWARDING = [name for name in CHECK_NAMES if name != "forwarding"]

GOV = "nguyenvana@bacninh.gov.vn"
GMAIL = "ban.cua.a@gmail.com"
LIST_SENDER = "thaoluan-bounces+nguyenvana=bacninh.gov.vn@lists.example.org"
LOCAL_LIST_SENDER = "congdong-bounces+member=example.org@lists.bacninh.gov.vn"
INTERNET = "127.0.0.2"
RELAY = "127.0.0.1"


@pytest.fixture(scope="module")
def harness() -> Harness:
    """The shipped rule files (the forwarding file in enforce mode), only the forwarding check."""
    assert 'mode = "enforce"' in (RULES / "forwarding.toml").read_text(encoding="utf-8")
    return Harness(skip=ONLY_FORWARDING)


def message(fields: Sequence[str], body: str = "Noi dung thu.\r\n") -> bytes:
    """A message from header lines (a value may be folded with CRLF + tab inside)."""
    return ("\r\n".join(fields) + "\r\n\r\n" + body).encode()


def scan(
    harness: Harness, fields: Sequence[str], mail_from: str, rcpt: str, client: str, body: str = "x\r\n"
) -> ScanResult:
    return harness.scan(message(fields, body), mail_from=mail_from, rcpts=[rcpt], client_ip=client)


def rules_of(result: ScanResult) -> list[str]:
    return [hit.rule for hit in result.tx.hits if hit.check == "forwarding"]


def accepted(result: ScanResult) -> bool:
    return result.verdict.action is Action.ACCEPT and not any(hit.refuses for hit in result.tx.hits)


def refused(result: ScanResult, rule: str) -> bool:
    return result.verdict.action is Action.REJECT and result.verdict.rule == rule


def post(
    mid: str, frm: str = "Ke gay roi <poster@sender.example>", to: str = "thaoluan@lists.example.org"
) -> list[str]:
    return [
        f"From: {frm}",
        f"To: {to}",
        "Subject: [thaoluan] Xin chao",
        "Date: Mon, 16 Sep 2024 09:50:00 +0700",
        f"Message-ID: <{mid}@sender.example>",
    ]


OUR_RECEIVED = (
    "Received: from lists.example.org (lists.example.org [203.0.113.40])\r\n\tby mx1.bacninh.gov.vn (Postfix)"
    " with ESMTPS id 4Qk61Zt\r\n\tfor <nguyenvana@bacninh.gov.vn>; Mon, 16 Sep 2024 09:51:11 +0700"
)
LIST_REINJECT = "Received: from localhost by lists.example.org (Postfix) with ESMTP id 8E1F2; Mon, 16 Sep 2024"
LIST_RECEIPT = (
    "Received: from mail.sender.example by mail.example.org (Postfix) with ESMTPS id 7D0E1\r\n"
    "\tfor <thaoluan@lists.example.org>; Mon, 16 Sep 2024 02:51:01 +0000"
)
MAILMAN_FIELDS = [
    "List-Id: Thao luan <thaoluan.lists.example.org>",
    "List-Post: <mailto:thaoluan@lists.example.org>",
    "Precedence: list",
    "X-BeenThere: thaoluan@lists.example.org",
    "X-Mailman-Version: 2.1.39",
]

# Traces a poster can write into his post, each naming someone outside the state (inbound they would
# refuse); (header lines, the rule they would decide as without a list around them)
POSTER_TRACES: dict[str, list[str]] = {
    "sieve": ["X-Sieve: Pigeonhole Sieve 0.5.19", "X-Sieve-Redirected-From: someone@gmail.com"],
    "sieve-folded": ["X-Sieve-Redirected-From:\r\n\t<someone@gmail.com>"],
    "sieve-lower-case": ["x-sieve-redirected-from: someone@gmail.com"],
    "sieve-upper-case": ["X-SIEVE-REDIRECTED-FROM: SOMEONE@GMAIL.COM"],
    "forwarded-to-for": ["X-Forwarded-To: thaoluan@lists.example.org", "X-Forwarded-For: someone@gmail.com x@y.org"],
    "delivered-to": ["Delivered-To: someone@gmail.com"],
    "zimbra": ["X-Zimbra-Forwarded: a.b@company.example"],
    "rules-loop": ["X-MS-Exchange-Inbox-Rules-Loop: c.d@company.example"],
    "several": [
        "X-Sieve-Redirected-From: someone@gmail.com",
        "Delivered-To: other@yahoo.com",
        "X-Zimbra-Forwarded: a.b@company.example",
        "X-Forwarded-For: e@outlook.com f@g.org",
        "X-MS-Exchange-Organization-AutoForwarded: true",
        "Received: from a by b for <h@company.example>; Mon, 16 Sep 2024",
        "Resent-From: h@company.example",
        "ARC-Seal: i=1; a=rsa-sha256; cv=none; d=x; s=y; b=z",
    ],
}


def test_the_poster_traces_refuse_without_a_list(harness: Harness) -> None:
    """The control: the same traces in a plain message from an Internet client are refused."""
    for name, trace in POSTER_TRACES.items():
        result = scan(harness, [*trace, *post(f"ctl-{name}")], "poster@sender.example", GOV, INTERNET)
        assert result.verdict.action is Action.REJECT, name


# --- the pure rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mail_from", "address", "domain"),
    [
        ("thaoluan-bounces@lists.example.org", "thaoluan@lists.example.org", "lists.example.org"),
        (LIST_SENDER, "thaoluan@lists.example.org", "lists.example.org"),  # Mailman VERP
        ("Thao-Luan-BOUNCES@Lists.Example.ORG", "Thao-Luan@Lists.Example.ORG", "Lists.Example.ORG"),
        ("owner-hoithao@lists.example.org", "hoithao@lists.example.org", "lists.example.org"),  # Majordomo, LISTSERV
        ("hoithao-owner@lists.example.org", "hoithao@lists.example.org", "lists.example.org"),  # Sympa
        ("hoithao-request@lists.example.org", "hoithao@lists.example.org", "lists.example.org"),
        (
            "hoithao-return-12-nguyenvana=bacninh.gov.vn@lists.example.org",
            "hoithao@lists.example.org",
            "lists.example.org",
        ),
        (
            "hoithao+bounces-12-nguyenvana=bacninh.gov.vn@lists.example.org",
            "hoithao@lists.example.org",
            "lists.example.org",
        ),
        ("thaoluan+bncBDV5AZ3QJQFBBX@googlegroups.com", "thaoluan@googlegroups.com", "googlegroups.com"),
        ("bounce-mc.us5_1234.5678-nguyenvana=bacninh.gov.vn@mail123.mcsv.net", "", "mail123.mcsv.net"),
        ("bounces+1234-abcd-nguyenvana=bacninh.gov.vn@groups.example.io", "", "groups.example.io"),
        ("prvs=0123abcd45=thaoluan-bounces@lists.example.org", "thaoluan@lists.example.org", "lists.example.org"),
        ("<thaoluan-bounces@lists.example.org>", "thaoluan@lists.example.org", "lists.example.org"),
    ],
)
def test_list_senders(mail_from: str, address: str, domain: str) -> None:
    found = list_sender(mail_from)
    assert found is not None
    assert (found.address, found.domain) == (address, domain)


@pytest.mark.parametrize(
    "mail_from",
    [
        "",
        "nguyenvana@bacninh.gov.vn",
        "bounces@example.org",  # a bare name says nothing
        "owner@example.org",
        "request@example.org",
        "SRS0=hK3f=TT=example.com=partner@forwarder.example.net",
        "a+caf_=b=bacninh.gov.vn@gmail.com",
        "prvs=0123abcd45=partner@example.com",
        "-bounces@lists.example.org",
        "thaoluan-bounces",  # no domain
        '"x-bounces"@example.org',
    ],
)
def test_not_list_senders(mail_from: str) -> None:
    assert list_sender(mail_from) is None


def test_list_marker_is_the_topmost_list_field_any_case() -> None:
    assert list_marker([("From", "a@b.c")]) == (-1, "")
    assert list_marker([("From", "a@b.c"), ("list-id", "<x.y>"), ("X-BeenThere", "x@y")]) == (1, "list-id")
    assert list_marker([("X-BEENTHERE", "x@y"), ("List-Id", "<x.y>")]) == (0, "x-beenthere")
    assert list_marker([("Precedence", " List "), ("List-Id", "<x.y>")]) == (0, "precedence")
    assert list_marker([("Precedence", "bulk")]) == (0, "precedence")
    assert list_marker([("Precedence", "junk"), ("Mailing-List", "list x@y")]) == (1, "mailing-list")


def headers_of(fields: Sequence[str]) -> list[tuple[str, str]]:
    pairs = []
    for line in fields:
        name, _, value = line.partition(":")
        pairs.append((name, value.strip()))
    return pairs


def test_boundary_of_a_mailman_copy_is_the_list_receipt() -> None:
    headers = headers_of(
        [
            OUR_RECEIVED,
            LIST_REINJECT,
            "Delivered-To: thaoluan@lists.example.org",
            LIST_RECEIPT,
            *POSTER_TRACES["sieve"],
            *post("b1"),
            *MAILMAN_FIELDS,
        ]
    )
    found = list_copy(LIST_SENDER, headers, inbound=True, by_host=True)
    assert found is not None
    assert found.boundary == 1  # the list host's own Received line (by lists.example.org)
    without_host = list_copy(LIST_SENDER, headers, inbound=True, by_host=False)
    assert without_host is not None and without_host.boundary == 2  # then Delivered-To of the list


def test_boundary_anchors_one_by_one() -> None:
    trace = "X-Sieve-Redirected-From: someone@gmail.com"
    cases = {
        "delivered-to": ["Delivered-To: thaoluan@lists.example.org", trace],
        "x-original-to": ["X-Original-To: <Thaoluan@Lists.Example.Org>", trace],
        "received-for": [LIST_RECEIPT, trace],
        "list-field": ["List-Id: <thaoluan.lists.example.org>", trace],
        "originator": ["From: poster@sender.example", trace],
    }
    for name, fields in cases.items():
        headers = headers_of(["Received: from x by mx1.bacninh.gov.vn for <nguyenvana@bacninh.gov.vn>", *fields])
        found = list_copy(LIST_SENDER, headers, inbound=True, by_host=False)
        assert found is not None and found.boundary == 1, name
        (sieve,) = header_traces(headers, LIST_SENDER, False)
        assert found.carried_inside(sieve), name


def test_no_anchor_means_every_header_trace_counts() -> None:
    headers = headers_of(["X-Sieve-Redirected-From: someone@gmail.com"])
    found = list_copy(LIST_SENDER, headers, inbound=True, by_host=True)
    assert found is not None and found.boundary == 1
    (sieve,) = header_traces(headers, LIST_SENDER, False)
    assert not found.carried_inside(sieve)


def test_a_forged_anchor_below_never_lifts_the_boundary() -> None:
    """A poster forges the list's anchors under his trace: the real ones above still win."""
    forged = ["Delivered-To: thaoluan@lists.example.org", LIST_RECEIPT, "List-Id: <thaoluan.lists.example.org>"]
    headers = headers_of([OUR_RECEIVED, LIST_RECEIPT, "X-Sieve-Redirected-From: someone@gmail.com", *forged])
    found = list_copy(LIST_SENDER, headers, inbound=True, by_host=False)
    assert found is not None and found.boundary == 1


def test_a_list_field_alone_makes_list_mail_only_when_allowed() -> None:
    headers = [("List-Id", "<x.example.org>"), ("From", "a@b.c")]
    assert list_copy("a@b.c", headers, inbound=False, by_host=False) is None
    found = list_copy("a@b.c", headers, inbound=True, by_host=False)
    assert found is not None and found.sender is None and found.boundary == 0
    assert list_copy("a@b.c", [("From", "a@b.c")], inbound=True, by_host=False) is None


def test_traces_carry_their_header_position() -> None:
    headers = [
        ("Received", "x"),
        ("x-sieve-redirected-from", "a@gmail.com"),
        ("From", "p@q.r"),
        ("X-Zimbra-Forwarded", "z@y.x"),
    ]
    assert [(t.name, t.position) for t in header_traces(HeaderIndex(headers), "p@q.r", False)] == [
        ("sieve-redirect", 1),
        ("zimbra-forwarded", 3),
    ]


def test_report_label_and_authorship() -> None:
    assert is_report([("Content-Type", "MULTIPART/REPORT; report-type=delivery-status")])
    assert not is_report([("Content-Type", "multipart/mixed")])
    assert exemption("", [("Content-Type", "multipart/report")]) == "dsn"
    assert exemption("x@example.com", [("Content-Type", "multipart/report")]) == ""
    trace = Trace(
        "zimbra-forwarded", header_traces([("X-Zimbra-Forwarded", "a@b.vn")], "", False)[0].strength, "A+vacation@B.VN"
    )
    assert authored_by(trace, ["a@b.vn"])
    assert not authored_by(trace, ["partner@example.com"])
    assert not authored_by(Trace("srs", trace.strength, "b.vn"), ["a@b.vn"])  # a domain is nobody's author


# --- denial of service on lists: the list copy is delivered -------------------------------------------


@pytest.mark.parametrize("trace", list(POSTER_TRACES), ids=list(POSTER_TRACES))
@pytest.mark.parametrize(
    "shape",
    ["mailman", "mailman-lmtp", "google", "sender-only", "list-id-only", "precedence-only", "batv", "owner"],
)
def test_a_trace_inside_a_list_copy_does_not_refuse_it(harness: Harness, shape: str, trace: str) -> None:
    inside = POSTER_TRACES[trace]
    mid = f"dos-{shape}-{trace}"
    sender = LIST_SENDER
    if shape == "mailman":  # Postfix local(8) to Mailman 2: Delivered-To, list fields appended at the end
        fields = [
            OUR_RECEIVED,
            LIST_REINJECT,
            "Delivered-To: thaoluan@lists.example.org",
            LIST_RECEIPT,
            *inside,
            *post(mid),
            *MAILMAN_FIELDS,
        ]
    elif shape == "mailman-lmtp":  # Mailman 3 over LMTP: only the list host's Received lines, fields at the end
        fields = [OUR_RECEIVED, LIST_REINJECT, LIST_RECEIPT, *inside, *post(mid), *MAILMAN_FIELDS]
    elif shape == "google":  # Google Groups prepends its fields
        sender = "thaoluan+bncBDV5AZ3QJQFBBX@googlegroups.com"
        fields = [
            OUR_RECEIVED,
            "X-BeenThere: thaoluan@googlegroups.com",
            "Received: by 2002:a05:6808 with SMTP id b",
            "Mailing-list: list thaoluan@googlegroups.com",
            "Precedence: list",
            "List-ID: <thaoluan.googlegroups.com>",
            *inside,
            *post(mid),
        ]
    elif shape == "sender-only":  # no list field at all: the envelope and the post's own fields
        fields = [OUR_RECEIVED, *post(mid)[:2], *inside, *post(mid)[2:]]
    elif shape == "list-id-only":  # a list field and an ordinary sender (a bare alias list)
        sender = "poster@sender.example"
        fields = [OUR_RECEIVED, "List-Id: <thaoluan.lists.example.org>", *inside, *post(mid)]
    elif shape == "precedence-only":
        sender = "poster@sender.example"
        fields = [OUR_RECEIVED, "Precedence: bulk", *post(mid)[:1], *inside, *post(mid)[1:]]
    elif shape == "batv":
        sender = "prvs=0123abcd45=thaoluan-bounces@lists.example.org"
        fields = [OUR_RECEIVED, LIST_RECEIPT, *inside, *post(mid), *MAILMAN_FIELDS]
    else:
        sender = "owner-thaoluan@lists.example.org"
        fields = [OUR_RECEIVED, "X-Original-To: thaoluan@lists.example.org", *inside, *post(mid)]
    result = scan(harness, fields, sender, GOV, INTERNET)
    assert accepted(result), (shape, trace, result.as_json())
    assert "exempt-mailing-list" in rules_of(result), (shape, trace, rules_of(result))
    assert not any(rule.startswith("score-") for rule in rules_of(result))


def test_several_subscribers_at_once(harness: Harness) -> None:
    fields = [
        LIST_REINJECT,
        "Delivered-To: thaoluan@lists.example.org",
        *POSTER_TRACES["sieve"],
        *post("many"),
        *MAILMAN_FIELDS,
    ]
    result = harness.scan(
        message(fields),
        mail_from="thaoluan-bounces@lists.example.org",
        rcpts=[GOV, "tranthib@sotttt.bacninh.gov.vn", "lethic@bacninh.gov.vn"],
        client_ip=INTERNET,
    )
    assert accepted(result)


@pytest.mark.parametrize("trace", ["sieve", "delivered-to", "several"])
def test_our_list_server_sends_a_post_with_a_gov_trace_outside(harness: Harness, trace: str) -> None:
    """Outbound: the poster's trace names a government mailbox; our list's copy to an outside member."""
    inside = [line.replace("someone@gmail.com", "tranthib@bacninh.gov.vn") for line in POSTER_TRACES[trace]]
    fields = [
        "Received: from lists.bacninh.gov.vn by mx1.bacninh.gov.vn for <member@example.org>; Mon",
        "Received: from localhost by lists.bacninh.gov.vn (Postfix) id 1; Mon",
        "Delivered-To: congdong@lists.bacninh.gov.vn",
        *inside,
        *post(f"out-{trace}", to="congdong@lists.bacninh.gov.vn"),
        "List-Id: <congdong.lists.bacninh.gov.vn>",
    ]
    result = scan(harness, fields, LOCAL_LIST_SENDER, "member@example.org", RELAY)
    assert accepted(result), result.as_json()


def test_the_memory_does_not_refuse_our_lists_copy(harness: Harness) -> None:
    """The post came in to a gov mailbox (Cc) and to the list: the list's copy out keeps its Message-ID."""
    inbound = [*post("mem-1", to="congdong@lists.bacninh.gov.vn"), f"Cc: {GOV}"]
    assert accepted(scan(harness, inbound, "poster@sender.example", GOV, INTERNET))
    copy = [*post("mem-1", to="congdong@lists.bacninh.gov.vn"), "List-Id: <congdong.lists.bacninh.gov.vn>"]
    result = scan(harness, copy, LOCAL_LIST_SENDER, "member@example.org", RELAY)
    assert accepted(result) and "exempt-mailing-list" in rules_of(result)
    # the same message sent on by the gov mailbox itself (not a list sender) is a redirect
    result = scan(harness, copy, GOV, GMAIL, RELAY)
    assert refused(result, "outbound-message-id-memory")


# --- the list's own forwarding is still caught ---------------------------------------------------------


@pytest.mark.parametrize(
    ("envelope", "rule"),
    [
        ("SRS0=q9Wz=TU=lists.example.org=thaoluan-bounces@forwarder.example.net", "inbound-srs"),
        ("SRS1=Xq2r=lists.example.org==q9Wz=TU=example.org=thaoluan-bounces@fwd.example.net", "inbound-srs"),
        ("member+caf_=nguyenvana=bacninh.gov.vn@gmail.com", "inbound-gmail-caf"),
        ("an+SRS=Ab1Cd=2K=lists.example.org=thaoluan-bounces@contoso.com", "inbound-exchange-srs"),
    ],
)
def test_a_list_copy_forwarded_by_envelope_is_refused(harness: Harness, envelope: str, rule: str) -> None:
    """A List-Id never exempts a message whose envelope is a forward."""
    fields = [OUR_RECEIVED, LIST_REINJECT, "Delivered-To: thaoluan@lists.example.org", *post("env"), *MAILMAN_FIELDS]
    assert refused(scan(harness, fields, envelope, GOV, INTERNET), rule)


@pytest.mark.parametrize("trace", ["sieve", "forwarded-to-for", "zimbra", "rules-loop", "delivered-to"])
def test_a_forwarders_trace_above_the_list_is_refused(harness: Harness, trace: str) -> None:
    """The list delivered to a member whose mailbox forwarded here, the list sender kept."""
    above = POSTER_TRACES[trace]
    fields = [
        "Received: from mail.company-mail.vn by mx1.bacninh.gov.vn for <nguyenvana@bacninh.gov.vn>; Mon",
        "Received: by mail.company-mail.vn (Postfix, from userid 5000) id 3C4D5; Mon",
        *above,
        "Received: from lists.example.org by mail.company-mail.vn for <an@company-mail.vn>; Mon",
        LIST_REINJECT,
        "Delivered-To: thaoluan@lists.example.org",
        *post(f"above-{trace}"),
        *MAILMAN_FIELDS,
    ]
    result = scan(harness, fields, "thaoluan-bounces+an=company-mail.vn@lists.example.org", GOV, INTERNET)
    assert result.verdict.action is Action.REJECT, (trace, result.as_json())


def test_a_trace_naming_the_list_itself_is_its_own_delivery(harness: Harness) -> None:
    fields = ["Delivered-To: Thaoluan+post@lists.example.org", *post("self"), *MAILMAN_FIELDS]
    assert accepted(scan(harness, fields, LIST_SENDER, GOV, INTERNET))


# --- forged list markers outbound: refused -------------------------------------------------------------

FORGED = {
    "list-id-above": ["List-Id: <x.bacninh.gov.vn>", "X-Sieve-Redirected-From: nguyenvana@bacninh.gov.vn"],
    "list-id-below": ["X-Sieve-Redirected-From: nguyenvana@bacninh.gov.vn", "List-Id: <x.bacninh.gov.vn>"],
    "every-marker": [
        "List-Id: <x.bacninh.gov.vn>",
        "List-Post: <mailto:x@bacninh.gov.vn>",
        "Precedence: list",
        "X-BeenThere: x@bacninh.gov.vn",
        "X-Mailman-Version: 2.1.39",
        "Mailing-List: list x@bacninh.gov.vn",
        "Delivered-To: thaoluan@bacninh.gov.vn",
        "X-Sieve-Redirected-From: nguyenvana@bacninh.gov.vn",
    ],
    "precedence-bulk": ["Precedence: bulk", "X-Sieve-Redirected-From: <nguyenvana@bacninh.gov.vn>"],
}


@pytest.mark.parametrize("forged", list(FORGED), ids=list(FORGED))
@pytest.mark.parametrize(
    "sender",
    [
        "partner@example.com",  # Pigeonhole keeps the original sender
        GOV,  # sieve_redirect_envelope_from = recipient
        "x-bounces@bacninh.gov.vn",  # a list sender of a local domain, written by the mailbox's owner
        LIST_SENDER,  # an outside list's copy the gov mailbox received
        "prvs=0123abcd45=x-bounces@lists.bacninh.gov.vn",
    ],
)
def test_an_outbound_redirect_with_forged_list_markers_is_refused(harness: Harness, forged: str, sender: str) -> None:
    fields = [
        "Received: from mail.bacninh.gov.vn by mx1.bacninh.gov.vn for <ban.cua.a@gmail.com>; Mon",
        "Received: by mail.bacninh.gov.vn (Postfix, from userid 5000) id 6E7F8; Mon",
        *FORGED[forged],
        *post(f"forged-{forged}", frm="Doi tac <partner@example.com>", to=GOV),
    ]
    result = scan(harness, fields, sender, GMAIL, RELAY)
    assert refused(result, "outbound-sieve-redirect"), (forged, sender, result.as_json())


def test_an_authenticated_user_with_forged_list_markers_is_refused(harness: Harness) -> None:
    fields = [*FORGED["every-marker"], *post("auth", frm=GOV, to=GMAIL)]
    result = harness.scan(
        message(fields),
        mail_from="congdong-bounces@lists.bacninh.gov.vn",
        rcpts=[GMAIL],
        client_ip="127.0.0.5",
        auth_user=GOV,
    )
    assert refused(result, "outbound-sieve-redirect")


def test_account_forwarding_of_an_outside_lists_copy_is_refused(harness: Harness) -> None:
    """No header, the outside list's sender kept, through the relay: the relay inference is not inside."""
    fields = [*post("acct"), *MAILMAN_FIELDS]
    assert refused(scan(harness, fields, LIST_SENDER, GMAIL, RELAY), "outbound-relay-inference")


# --- the report label ------------------------------------------------------------------------------------

REPORT_TYPES = [
    'multipart/report; report-type=delivery-status; boundary="r"',
    'Multipart/Report; report-type=disposition-notification; boundary="r"',
    'MULTIPART/REPORT; REPORT-TYPE=DELIVERY-STATUS; BOUNDARY="r"',
    'multipart/report;\r\n\treport-type=delivery-status;\r\n\tboundary="r"',
]
REPORT_BODY = (
    "--r\r\nContent-Type: text/plain\r\n\r\nHo so.\r\n--r\r\nContent-Type: message/delivery-status\r\n\r\n"
    "Reporting-MTA: dns; mail.bacninh.gov.vn\r\n\r\nFinal-Recipient: rfc822; x@example.com\r\nAction: failed\r\n"
    'Status: 5.0.0\r\n--r\r\nContent-Type: application/pdf; name="ho-so.pdf"\r\n'
    "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--r--\r\n"
)


@pytest.mark.parametrize("ctype", REPORT_TYPES)
def test_a_report_label_from_a_user_does_not_exempt_an_outbound_redirect(harness: Harness, ctype: str) -> None:
    fields = [
        "X-Sieve-Redirected-From: <nguyenvana@bacninh.gov.vn>",
        *post("rpt", frm=GOV, to=GMAIL),
        "MIME-Version: 1.0",
        f"Content-Type: {ctype}",
    ]
    for sender in (GOV, "MAILER-DAEMON@bacninh.gov.vn", "postmaster@bacninh.gov.vn"):
        result = scan(harness, fields, sender, GMAIL, RELAY, body=REPORT_BODY)
        assert refused(result, "outbound-sieve-redirect"), (ctype, sender)
        assert "exempt-dsn" not in rules_of(result)


@pytest.mark.parametrize("ctype", REPORT_TYPES)
def test_a_report_label_does_not_exempt_an_inbound_forward(harness: Harness, ctype: str) -> None:
    fields = [*post("rpt-in", frm="partner@example.com", to=GOV), "MIME-Version: 1.0", f"Content-Type: {ctype}"]
    result = scan(
        harness, fields, "SRS0=q9Wz=TU=example.com=partner@forwarder.example.net", GOV, INTERNET, body=REPORT_BODY
    )
    assert refused(result, "inbound-srs")


@pytest.mark.parametrize("client", [RELAY, INTERNET])
def test_a_null_sender_report_is_a_dsn(harness: Harness, client: str) -> None:
    """A real DSN: null sender; it may carry the returned message's traces (here a Delivered-To)."""
    rcpt = "partner@example.com" if client == RELAY else GOV
    fields = [
        "Delivered-To: nguyenvana@bacninh.gov.vn" if client == RELAY else "Delivered-To: x@gmail.com",
        *post("dsn", frm="MAILER-DAEMON@mail.bacninh.gov.vn", to=rcpt),
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f"Content-Type: {REPORT_TYPES[0]}",
    ]
    result = scan(harness, fields, "", rcpt, client, body=REPORT_BODY)
    assert accepted(result) and rules_of(result) == ["exempt-dsn"]


# --- automatic replies -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "trace",
    [
        "X-Zimbra-Forwarded: nguyenvana@bacninh.gov.vn",
        "X-MS-Exchange-Inbox-Rules-Loop: NguyenVanA@bacninh.gov.vn",
        "Delivered-To: nguyenvana+vacation@bacninh.gov.vn",
    ],
)
@pytest.mark.parametrize("label", ["auto-replied", "Auto-Replied (vacation)", "auto-notified"])
def test_a_mailboxs_own_auto_reply_passes(harness: Harness, trace: str, label: str) -> None:
    fields = [trace, f"Auto-Submitted: {label}", *post("oof", frm=f"Nguyen Van A <{GOV}>", to="partner@example.com")]
    result = scan(harness, fields, GOV, "partner@example.com", RELAY)
    assert accepted(result) and "exempt-auto-reply" in rules_of(result)


@pytest.mark.parametrize("label", ["auto-replied", "auto-notified"])
def test_an_auto_reply_label_on_a_forward_is_refused(harness: Harness, label: str) -> None:
    fields = [
        "X-Sieve-Redirected-From: nguyenvana@bacninh.gov.vn",
        f"Auto-Submitted: {label}",
        *post("oof-fwd", frm="partner@example.com", to=GOV),
    ]
    for sender in ("partner@example.com", GOV):
        assert refused(scan(harness, fields, sender, GMAIL, RELAY), "outbound-sieve-redirect")
    srs = "SRS0=q9Wz=TU=example.com=partner@forwarder.example.net"
    inbound = [f"Auto-Submitted: {label}", *post("oof-in", frm="partner@example.com", to=GOV)]
    assert refused(scan(harness, inbound, srs, GOV, INTERNET), "inbound-srs")


# --- properties: what a poster writes cannot lift his trace, what a forwarder prepends counts --------------

FIELD_NAMES = st.sampled_from(
    [
        "List-Id", "list-post", "Precedence", "X-BeenThere", "Delivered-To", "X-Original-To", "Received", "From",
        "To", "Subject", "Date", "Message-ID", "X-Sieve-Redirected-From", "X-Forwarded-For", "X-Zimbra-Forwarded",
        "Mailing-List", "Comments",
    ]
)  # fmt: skip
FIELD_VALUES = st.one_of(
    st.sampled_from(
        [
            "thaoluan@lists.example.org", "<thaoluan.lists.example.org>", "list", "bulk", "someone@gmail.com",
            "from x by lists.example.org for <thaoluan@lists.example.org>; Mon", "from x by y for <a@b.c>; Mon",
        ]
    ),
    st.text(max_size=40),
)  # fmt: skip
POSTS = st.lists(st.tuples(FIELD_NAMES, FIELD_VALUES), max_size=15)
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIST_TOPS = [
    [("Delivered-To", "thaoluan@lists.example.org")],
    [("Received", "from a by mail.example.org for <thaoluan@lists.example.org>; Mon")],
    [("Received", "from localhost by lists.example.org (Postfix) id 1; Mon")],
]


@PROPERTY
@given(POSTS, st.sampled_from(LIST_TOPS), st.integers(min_value=0, max_value=15))
def test_nothing_in_the_post_lifts_a_trace_above_the_list(
    post_fields: list[tuple[str, str]], top: list[tuple[str, str]], where: int
) -> None:
    post_fields = list(post_fields)
    post_fields.insert(min(where, len(post_fields)), ("X-Sieve-Redirected-From", "someone@gmail.com"))
    headers = [("Received", "from lists.example.org by mx1.bacninh.gov.vn for <nguyenvana@bacninh.gov.vn>"), *top]
    headers += post_fields
    found = list_copy(LIST_SENDER, headers, inbound=True, by_host=True)
    assert found is not None and found.boundary <= len(headers)
    for trace in header_traces(headers, LIST_SENDER, False):
        assert found.carried_inside(trace) or found.own_delivery(trace), (headers, trace)


@PROPERTY
@given(POSTS, st.booleans())
def test_a_trace_prepended_above_a_list_copy_always_counts(post_fields: list[tuple[str, str]], inbound: bool) -> None:
    sender = LIST_SENDER if inbound else LOCAL_LIST_SENDER
    headers = [("Received", "from x by mx1.bacninh.gov.vn; Mon"), ("Received", "by mail.company-mail.vn id 1; Mon")]
    headers += [("X-Sieve-Redirected-From", "an@company-mail.vn"), *post_fields]
    found = list_copy(sender, headers, inbound=inbound, by_host=inbound)
    assert found is not None
    first = header_traces(headers, sender, False)[0]
    assert first.position == 2 and not found.carried_inside(first) and not found.own_delivery(first)
