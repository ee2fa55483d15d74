"""The pure trace extraction: envelope rewrites, header traces, exemptions."""

from __future__ import annotations

import pytest

from govmilter.checks.forwarding.traces import (
    Strength,
    auto_submitted,
    delivered_to_traces,
    envelope_rewrite,
    envelope_traces,
    exemption,
    header_traces,
    message_id,
    parse_batv,
    parse_exchange_srs,
    parse_gmail_caf,
    parse_srs,
    received_for_traces,
    same_mailbox,
    weak_traces,
)

# --- SRS ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("sep", ["=", "+", "-"])
def test_srs0_with_each_separator(sep: str) -> None:
    found = parse_srs(f"SRS0{sep}hK3f=TT=example.com=partner@bacninh.gov.vn")
    assert found is not None
    assert found.kind == "srs"
    assert found.forwarder == "bacninh.gov.vn"
    assert found.original == "partner@example.com"


def test_srs0_case_and_brackets() -> None:
    found = parse_srs("<srs0=hK3f=TT=Example.com=Partner@Forwarder.Example.NET>")
    assert found is not None and found.forwarder == "Forwarder.Example.NET"
    assert found.original == "Partner@Example.com"


def test_srs0_local_part_with_equals_is_kept_whole() -> None:
    found = parse_srs("SRS0=hK3f=TT=example.com=a=b@fwd.example")
    assert found is not None and found.original == "a=b@example.com"


@pytest.mark.parametrize("sep", ["=", "+", "-"])
def test_srs1(sep: str) -> None:
    found = parse_srs(f"SRS1{sep}Xq2r=hanoi.gov.vn==hK3f=TT=example.com=partner@alumni.example.edu")
    assert found is not None
    assert found.forwarder == "alumni.example.edu"  # the last hop is the forwarder we see
    assert found.original == "partner@example.com"


@pytest.mark.parametrize(
    "address",
    [
        "SRS0=onlyhash@example.com",
        "SRS0=h=t=domain@example.com",  # one field short
        "SRS0==TT=example.com=x@fwd.example",  # empty hash
        "SRS0=hK3f=TT=example.com=partner",  # no forwarder domain
        "SRS2=hK3f=TT=example.com=partner@fwd.example",
        "srs0team@example.com",
        "SRS0-team@example.com",
        "SRS1=hash@example.com",
        "",
    ],
)
def test_not_srs(address: str) -> None:
    assert parse_srs(address) is None


# --- Exchange Online SRS, Gmail caf, BATV -----------------------------------------------------------


def test_exchange_srs_mailbox() -> None:
    found = parse_exchange_srs("lethic+SRS=Ab1Cd=2K=example.com=partner@bacninh.gov.vn")
    assert found is not None
    assert found.forwarder == "lethic@bacninh.gov.vn"
    assert found.original == "partner@example.com"


def test_exchange_srs_bounces_names_the_domain() -> None:
    found = parse_exchange_srs("bounces+SRS=Zz9Yx=Q1=example.com=partner@contoso.onmicrosoft.com")
    assert found is not None and found.forwarder == "contoso.onmicrosoft.com"


def test_exchange_srs_lower_case_tag() -> None:
    found = parse_exchange_srs("john+srs=Q7=3F=example.com=partner@contoso.com")
    assert found is not None and found.forwarder == "john@contoso.com"


@pytest.mark.parametrize("address", ["john+news@contoso.com", "+SRS=a=b=c=d@contoso.com", "john@contoso.com"])
def test_not_exchange_srs(address: str) -> None:
    assert parse_exchange_srs(address) is None


def test_gmail_caf() -> None:
    found = parse_gmail_caf("ban.cua.a+caf_=nguyenvana=bacninh.gov.vn@gmail.com")
    assert found is not None
    assert found.kind == "gmail-caf"
    assert found.forwarder == "ban.cua.a@gmail.com"
    upper = parse_gmail_caf("Ban+CAF_=x=example.com@googlemail.com")
    assert upper is not None and upper.forwarder == "Ban@googlemail.com"


@pytest.mark.parametrize("address", ["a+caf@gmail.com", "+caf_=x=y@gmail.com", "a+caf_=nodomain@gmail.com"])
def test_not_gmail_caf(address: str) -> None:
    assert parse_gmail_caf(address) is None


def test_batv_forms() -> None:
    found = parse_batv("prvs=0123abcd45=partner@example.com")
    assert found is not None and found.original == "partner@example.com"
    older = parse_batv("nguyenvana=prvs=0a1b2c3d4e@bacninh.gov.vn")
    assert older is not None and older.original == "nguyenvana@bacninh.gov.vn"
    assert parse_batv("prvs@example.com") is None


def test_envelope_traces_strengths_and_batv() -> None:
    (srs,) = envelope_traces("SRS0=a=b=example.com=x@fwd.example")
    assert (srs.name, srs.strength, srs.forwarder) == ("srs", Strength.DECISIVE, "fwd.example")
    (caf,) = envelope_traces("a+caf_=b=c.vn@gmail.com")
    assert (caf.name, caf.strength) == ("gmail-caf", Strength.DECISIVE)
    (exo,) = envelope_traces("a+SRS=h=t=d.com=l@contoso.com")
    assert (exo.name, exo.strength) == ("exchange-srs", Strength.STRONG)
    # BATV is a signature of the sender itself: recognised, never a forward
    assert envelope_rewrite("prvs=0123abcd45=partner@example.com") is not None
    assert envelope_traces("prvs=0123abcd45=partner@example.com") == []
    assert envelope_traces("") == []
    assert envelope_traces("plain.user@example.com") == []


# --- headers ----------------------------------------------------------------------------------------


def names(traces: list) -> list[str]:
    return [t.name for t in traces]


def test_sieve_and_zimbra_name_the_mailbox() -> None:
    headers = [
        ("X-Sieve", "Pigeonhole Sieve 0.5.19"),
        ("X-Sieve-Redirected-From", "<nguyenvana@bacninh.gov.vn>"),
        ("X-Zimbra-Forwarded", "tranthib@sotttt.bacninh.gov.vn"),
    ]
    found = header_traces(headers, "x@example.com", trusted_relay=False)
    assert [(t.name, t.forwarder, t.strength) for t in found] == [
        ("sieve-redirect", "nguyenvana@bacninh.gov.vn", Strength.DECISIVE),
        ("zimbra-forwarded", "tranthib@sotttt.bacninh.gov.vn", Strength.DECISIVE),
    ]


def test_exchange_rules_loop_forward_and_reply() -> None:
    forward = [("From", "Partner <p@example.com>"), ("X-MS-Exchange-Inbox-Rules-Loop", "lethic@bacninh.gov.vn")]
    assert names(header_traces(forward, "", False)) == ["exchange-rules-loop"]
    # an inbox-rule reply: from the mailbox itself, in reply to a message
    reply = [
        ("From", "Le Thi C <LeThiC@bacninh.gov.vn>"),
        ("In-Reply-To", "<x@example.com>"),
        ("X-MS-Exchange-Inbox-Rules-Loop", "lethic@bacninh.gov.vn"),
    ]
    assert header_traces(reply, "", False) == []
    # the mailbox's own new message without In-Reply-To (a rule's "forward") still counts
    own = [("From", "lethic@bacninh.gov.vn"), ("X-MS-Exchange-Inbox-Rules-Loop", "lethic@bacninh.gov.vn")]
    assert names(header_traces(own, "", False)) == ["exchange-rules-loop"]


def test_exchange_autoforwarded_is_strong_only_from_a_trusted_relay() -> None:
    headers = [("X-MS-Exchange-Organization-AutoForwarded", "True")]
    (inside,) = header_traces(headers, "", trusted_relay=True)
    (outside,) = header_traces(headers, "", trusted_relay=False)
    assert inside.strength is Strength.STRONG and outside.strength is Strength.WEAK
    assert header_traces([("X-MS-Exchange-Organization-AutoForwarded", "false")], "", True) == []


def test_gmail_headers() -> None:
    both = [("X-Forwarded-To", "dest@bacninh.gov.vn"), ("X-Forwarded-For", "fwd@gmail.com dest@bacninh.gov.vn")]
    (found,) = header_traces(both, "fwd+caf_=dest=bacninh.gov.vn@gmail.com", False)
    assert (found.name, found.forwarder) == ("gmail-forwarded", "fwd@gmail.com")
    # only X-Forwarded-To: the forwarder is taken from the envelope (caf form decoded)
    (to_only,) = header_traces([("X-Forwarded-To", "dest@bacninh.gov.vn")], "fwd+caf_=d=b.vn@gmail.com", False)
    assert to_only.forwarder == "fwd@gmail.com"
    (plain,) = header_traces([("X-Forwarded-To", "dest@bacninh.gov.vn")], "someone@example.com", False)
    assert plain.forwarder == "someone@example.com"
    # a web front end's client address is not a mail forward
    assert header_traces([("X-Forwarded-For", "203.0.113.9, 10.0.0.1")], "a@b.c", False) == []


def test_delivered_to_only_when_not_a_recipient() -> None:
    headers = [("Delivered-To", "nguyenvana@bacninh.gov.vn"), ("Delivered-To", "Ban@Gmail.com")]
    found = delivered_to_traces(headers, ["ban+x@gmail.com"])
    assert [(t.name, t.forwarder, t.strength) for t in found] == [
        ("delivered-to", "nguyenvana@bacninh.gov.vn", Strength.STRONG)
    ]


def test_received_for() -> None:
    headers = [
        ("Received", "from a by b with ESMTP id 1\n\tfor <ban@gmail.com>; Mon, 16 Sep 2024 09:00:00 +0700"),
        ("Received", "from c by d with ESMTP id 2\n\tfor <nguyenvana@bacninh.gov.vn>; Mon, 16 Sep 2024"),
        ("Received", "from e by f with SMTP for nguyenvana@bacninh.gov.vn; Mon, 16 Sep 2024"),  # repeated
        ("Received", "from g (envelope-from <x@y.z>) by h; Mon, 16 Sep 2024"),
        ("Received", "from i by j (Exim) for other@example.org; Mon"),
    ]
    found = received_for_traces(headers, ["ban@gmail.com"])
    assert [(t.forwarder, t.strength) for t in found] == [
        ("nguyenvana@bacninh.gov.vn", Strength.MEDIUM),
        ("other@example.org", Strength.MEDIUM),
    ]


def test_weak_traces() -> None:
    headers = [
        ("Resent-Date", "Mon, 16 Sep 2024"),
        ("Auto-Submitted", "Auto-Generated"),
        ("ARC-Seal", "i=1; a=rsa-sha256; cv=none; d=x; s=y; b=z"),
    ]
    assert [(t.name, t.strength) for t in weak_traces(headers)] == [
        ("resent", Strength.WEAK),
        ("auto-generated", Strength.WEAK),
        ("arc", Strength.WEAK),
    ]
    assert weak_traces([("Auto-Submitted", "no")]) == []


# --- exemptions and small helpers ----------------------------------------------------------------------


REPORT = ("Content-Type", "multipart/report; report-type=delivery-status; boundary=x")


@pytest.mark.parametrize(
    ("mail_from", "headers", "expected"),
    [
        # only the null sender exempts a whole message; a report with it is a "dsn"
        ("", [], "null-sender"),
        ("", [REPORT], "dsn"),
        ("", [("Content-Type", "Multipart/Report; report-type=disposition-notification")], "dsn"),
        ("", [("Content-Type", "text/plain")], "null-sender"),
        # a label from a non-null sender exempts nothing (the bypass of issue 14)
        ("a@example.com", [REPORT], ""),
        ("a@example.com", [("Content-Type", "Multipart/Report; report-type=disposition-notification")], ""),
        ("MAILER-DAEMON@example.com", [REPORT], ""),
        ("postmaster@hanoi.gov.vn", [REPORT], ""),
        ("a@example.com", [("Auto-Submitted", "auto-replied (vacation)")], ""),
        ("a@example.com", [("Auto-Submitted", "Auto-Notified")], ""),
        ("a@example.com", [("List-Id", "<l.example.org>")], ""),
        ("a@example.com", [("Precedence", "bulk")], ""),
        ("news-bounces@lists.example.org", [("List-Id", "<news.lists.example.org>")], ""),
        ("prvs=0123abcd45=partner@example.com", [REPORT], ""),
        ("a@example.com", [("Content-Type", "multipart/mixed; boundary=x")], ""),
    ],
)
def test_exemption(mail_from: str, headers: list[tuple[str, str]], expected: str) -> None:
    assert exemption(mail_from, headers) == expected


def test_message_id_and_auto_submitted() -> None:
    assert message_id([("Message-ID", " <abc@example.com> ")]) == "abc@example.com"
    assert message_id([("Message-Id", "<abc@example.com> (comment)")]) == "abc@example.com"
    assert message_id([("Message-ID", "bare@example.com")]) == "bare@example.com"
    assert message_id([("Message-ID", "two words")]) == ""
    assert message_id([]) == ""
    assert auto_submitted([]) == "no"


def test_same_mailbox() -> None:
    assert same_mailbox("User+tag@Example.COM", "user@example.com.")
    assert not same_mailbox("user@example.com", "user@example.org")
    assert not same_mailbox("", "")
