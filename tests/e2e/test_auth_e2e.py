"""Sender authentication through real Postfix: SPF, DKIM, DMARC, ARC inbound, DKIM signing outbound.

The stack's dnsmasq also answers TXT records made here, with keys generated at test time
(`govmilter dkim keygen`'s code): alpha.com (SPF allows the Internet client 127.0.0.3 and the
HELO name helo.alpha.com, DMARC p=reject, a DKIM key), beta.com (SPF lists another address,
p=none), two ARC sealers (list.example.net, trusted here, and rogue.example.org), the local
domain's signing key, and delta.com (used only while DNS is down). The delivered signature is
verified by Perl's Mail::DKIM (tests/e2e/dkim_verify.pl), an implementation independent of dkimpy.
"""

from __future__ import annotations

import email.message
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest

from e2e.helpers import INTERNET_CLIENT, TRUSTED_RELAY, running_stack, unique
from govmilter.checks.auth.signing import keygen, load_key, public_record, sign
from govmilter.config import DkimKey
from stack import Reply, Stack

AUTHSERV = "gw.bacninh.gov.vn"
VERIFIER = Path(__file__).with_name("dkim_verify.pl")
OTHER_CLIENT = "127.0.0.4"  # an Internet client alpha.com's SPF does not list
KEYS = (
    ("alpha.com", "sel1"),
    ("delta.com", "sel1"),
    ("list.example.net", "arc1"),
    ("rogue.example.org", "arc1"),
    ("bacninh.gov.vn", "gw1"),
)
TXT = [
    ("alpha.com", f"v=spf1 ip4:{INTERNET_CLIENT} -all"),
    ("_dmarc.alpha.com", "v=DMARC1; p=reject"),
    ("helo.alpha.com", f"v=spf1 ip4:{INTERNET_CLIENT} -all"),
    ("beta.com", "v=spf1 ip4:192.0.2.1 -all"),
    ("_dmarc.beta.com", "v=DMARC1; p=none"),
    ("delta.com", f"v=spf1 ip4:{INTERNET_CLIENT} -all"),
    ("_dmarc.delta.com", "v=DMARC1; p=reject"),
]


class Lab:
    def __init__(self, stack: Stack, keys: dict[str, Path]):
        self.stack = stack
        self.keys = keys

    def key(self, domain: str, selector: str) -> Path:
        return self.keys[f"{selector}._domainkey.{domain}"]

    def signed(self, raw: bytes, domain: str, selector: str = "sel1") -> bytes:
        key = load_key(DkimKey(domain, selector, str(self.key(domain, selector))))
        return f"DKIM-Signature: {sign(raw, key)}\r\n".encode() + raw


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    folder = tmp_path_factory.mktemp("authkeys")
    keys: dict[str, Path] = {}
    for domain, selector in KEYS:
        path = folder / f"{domain}.{selector}.pem"
        keygen(domain, selector, "rsa", str(path))
        keys[f"{selector}._domainkey.{domain}"] = path
    txt = TXT + [(name, public_record(str(path))) for name, path in keys.items()]
    signing = keys["gw1._domainkey.bacninh.gov.vn"]
    settings = {
        "auth.authserv_id": f'"{AUTHSERV}"',
        "auth.trusted_arc_sealers": '["list.example.net"]',
        "dkim.keys": f'[{{domain="bacninh.gov.vn", selector="gw1", key_file="{signing}"}}]',
    }
    for stack in running_stack("govmilter-auth-e2e-", dns_txt=txt, settings=settings):
        yield Lab(stack, keys)


def letter(sender: str, subject: str, extra: str = "", to: str = "user@bacninh.gov.vn") -> tuple[bytes, str]:
    """A message and its unique Message-ID."""
    marker = unique(subject)
    raw = (
        f"From: Cuc Thue <{sender}>\r\nTo: <{to}>\r\nSubject: {subject} {marker}\r\n"
        f"Date: Mon, 23 Nov 2026 10:00:00 +0700\r\nMessage-ID: <{marker}@test.example>\r\n{extra}"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nNoi dung thu.\r\n"
    ).encode()
    return raw, f"{marker}@test.example"


def delivered(lab: Lab, message_id: str) -> email.message.Message:
    return lab.stack.sink.find_id(message_id).message


def ours(msg: email.message.Message) -> str:
    """Our one Authentication-Results field, unfolded."""
    values = [str(v) for v in msg.get_all("Authentication-Results", []) if str(v).startswith(f"{AUTHSERV};")]
    assert len(values) == 1, msg.get_all("Authentication-Results")
    return " ".join(values[0].split())


def send(lab: Lab, raw: bytes, mail_from: str, client: str = INTERNET_CLIENT, helo: str = "mx.example.org",
         rcpt: str = "user@bacninh.gov.vn") -> Reply:  # fmt: skip
    return lab.stack.send(mail_from, [rcpt], raw, source_ip=client, helo=helo)


# ---- inbound ----------------------------------------------------------------------------------


def test_aligned_pass_is_delivered_with_its_authentication_results(lab: Lab) -> None:
    raw, mid = letter("thue@alpha.com", "aligned")
    reply = send(lab, lab.signed(raw, "alpha.com"), "thue@alpha.com")
    assert reply.accepted, reply
    value = ours(delivered(lab, mid))
    assert value.startswith(f"{AUTHSERV}; spf=pass smtp.mailfrom=alpha.com;")
    assert "dkim=pass header.d=alpha.com header.s=sel1;" in value
    assert value.endswith("dmarc=pass policy.dmarc=reject header.from=alpha.com")


def test_spoofed_sender_of_a_reject_domain_is_refused(lab: Lab) -> None:
    raw, _ = letter("thue@alpha.com", "spoofed")
    reply = send(lab, raw, "bounce@beta.com")
    assert (reply.stage, reply.code) == ("data", 550), reply
    assert reply.text.startswith("5.7.1 ") and "alpha.com publishes DMARC p=reject" in reply.text


def test_the_same_under_p_none_is_delivered_with_dmarc_fail(lab: Lab) -> None:
    raw, mid = letter("a@beta.com", "pnone")
    reply = send(lab, raw, "a@beta.com")
    assert reply.accepted, reply
    value = ours(delivered(lab, mid))
    assert "spf=fail" in value and "smtp.mailfrom=beta.com" in value
    assert "dkim=none;" in value
    assert 'dmarc=fail reason="no aligned SPF or DKIM pass" policy.dmarc=none header.from=beta.com' in value


def test_dkim_pass_with_spf_fail_is_delivered(lab: Lab) -> None:
    raw, mid = letter("thue@alpha.com", "dkimonly")
    reply = send(lab, lab.signed(raw, "alpha.com"), "thue@alpha.com", client=OTHER_CLIENT)
    assert reply.accepted, reply
    value = ours(delivered(lab, mid))
    assert "spf=fail" in value and "dkim=pass header.d=alpha.com" in value and "dmarc=pass" in value


def test_the_helo_name_reaches_the_null_senders_spf(lab: Lab) -> None:
    """The HELO name must reach the milter: the null sender's SPF uses it (RFC 7208 2.3)."""
    raw, mid = letter("mailer-daemon@beta.com", "nullsender")
    reply = send(lab, raw, "", helo="helo.alpha.com")
    assert reply.accepted, reply
    assert "spf=pass smtp.helo=helo.alpha.com" in ours(delivered(lab, mid))
    raw, mid = letter("mailer-daemon@beta.com", "nullsender-other")
    reply = send(lab, raw, "", client=OTHER_CLIENT, helo="helo.alpha.com")
    assert reply.accepted, reply
    assert "spf=fail" in ours(delivered(lab, mid)) and "smtp.helo=helo.alpha.com" in ours(delivered(lab, mid))


def test_forged_authentication_results_with_our_id_is_removed(lab: Lab) -> None:
    extra = (
        f"Authentication-Results: {AUTHSERV}; dkim=pass header.d=forged.example; dmarc=pass\r\n"
        "Authentication-Results: mx.other.example; spf=pass smtp.mailfrom=beta.com\r\n"
    )
    raw, mid = letter("a@beta.com", "forged", extra)
    assert send(lab, raw, "a@beta.com").accepted
    msg = delivered(lab, mid)
    values = [" ".join(str(v).split()) for v in msg.get_all("Authentication-Results", [])]
    assert not [v for v in values if "forged.example" in v], values
    assert "mx.other.example; spf=pass smtp.mailfrom=beta.com" in values
    assert "dmarc=fail" in ours(msg)  # and ours is the one we wrote


def test_a_long_authentication_results_arrives_folded(lab: Lab) -> None:
    raw, mid = letter("thue@alpha.com", "folded")
    for _ in range(4):  # four signatures: four dkim results, far past one 78-character line
        raw = lab.signed(raw, "alpha.com")
    assert send(lab, raw, "thue@alpha.com").accepted
    data = lab.stack.sink.find_id(mid).data
    start = data.index(f"Authentication-Results: {AUTHSERV};".encode())
    field = data[start : data.index(b"\r\n", data.index(b"dmarc=pass", start)) + 2]
    lines = field.split(b"\r\n")[:-1]
    assert len(lines) >= 6 and all(len(line) <= 78 for line in lines), field
    assert all(line[:1] in (b" ", b"\t") for line in lines[1:])  # continuation lines: a valid fold
    assert b"\n" not in field.replace(b"\r\n", b"") and b"\r" not in field.replace(b"\r\n", b"")
    assert ours(delivered(lab, mid)).count("dkim=pass header.d=alpha.com") == 4


# ---- ARC: a mailing list ------------------------------------------------------------------------


def through_list(lab: Lab, raw: bytes, sealer: str) -> bytes:
    """As a mailing list relays it: its own check, a subject tag and a footer (the DKIM signature
    breaks), then its ARC set."""
    seen = f"Authentication-Results: {sealer}; dkim=pass header.d=alpha.com; dmarc=pass header.from=alpha.com\r\n"
    changed = (seen.encode() + raw).replace(b"Subject: ", b"Subject: [ds-tinh] ", 1) + b"-- \r\nDanh sach ds-tinh\r\n"
    key = load_key(DkimKey(sealer, "arc1", str(lab.key(sealer, "arc1"))))
    arc_set = dkim.arc_sign(changed, b"arc1", sealer.encode(), key.pem, sealer.encode())
    assert len(arc_set) == 3
    return b"".join(arc_set) + changed


def test_list_message_sealed_by_a_trusted_sealer_is_delivered(lab: Lab) -> None:
    raw, mid = letter("thue@alpha.com", "listed", "List-Id: <ds-tinh.list.example.net>\r\n")
    relayed = through_list(lab, lab.signed(raw, "alpha.com"), "list.example.net")
    reply = send(lab, relayed, "ds-tinh-bounces@list.example.net", client=OTHER_CLIENT)
    assert reply.accepted, reply
    value = ours(delivered(lab, mid))
    assert "dkim=fail" in value
    assert 'dmarc=fail reason="policy overridden: trusted_forwarder, ARC sealed by list.example.net"' in value
    assert 'arc=pass reason="sealed by list.example.net"' in value


def test_the_same_from_an_untrusted_sealer_is_refused(lab: Lab) -> None:
    raw, _ = letter("thue@alpha.com", "rogue", "List-Id: <ds.rogue.example.org>\r\n")
    relayed = through_list(lab, lab.signed(raw, "alpha.com"), "rogue.example.org")
    reply = send(lab, relayed, "bounce@rogue.example.org", client=OTHER_CLIENT)
    assert (reply.stage, reply.code) == ("data", 550), reply
    assert reply.text.startswith("5.7.1 ") and "alpha.com publishes DMARC p=reject" in reply.text


# ---- outbound signing, verified by an independent implementation ------------------------------


def independent_verify(lab: Lab, data: bytes) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["perl", str(VERIFIER), str(lab.stack.dns_port)], input=data.decode("latin-1"),
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_outbound_mail_is_signed_and_the_signature_verifies_independently(lab: Lab) -> None:
    raw, mid = letter("vanthu@bacninh.gov.vn", "outbound", to="partner@example.org")
    reply = send(lab, raw, "vanthu@bacninh.gov.vn", client=TRUSTED_RELAY, rcpt="partner@example.org")
    assert reply.accepted, reply
    data = lab.stack.sink.find_id(mid).data
    assert data.count(b"DKIM-Signature:") == 1 and b"Authentication-Results" not in data
    checked = independent_verify(lab, data)
    assert checked.returncode == 0 and checked.stdout.split() == ["pass", "bacninh.gov.vn", "gw1"], checked
    # the verifier is no rubber stamp: the same message changed in transit fails
    changed = independent_verify(lab, data.replace(b"Noi dung thu.", b"Noi dung khac."))
    assert changed.returncode == 1 and changed.stdout.split()[0] == "fail", changed


# ---- govmilter scan: the contract -------------------------------------------------------------


def scan(lab: Lab, raw: bytes, *args: str) -> dict[str, object]:
    settings = [f"dns.port={lab.stack.dns_port}", 'dns.resolver="127.0.0.1"', f'auth.authserv_id="{AUTHSERV}"',
                f"dkim.keys={lab.stack.govmilter.settings['dkim.keys']}"]  # fmt: skip
    command = [sys.executable, "-m", "govmilter", "scan", "--json", "--skip", "antivirus"]
    for setting in settings:
        command += ["--set", setting]
    done = subprocess.run([*command, *args, "-"], input=raw, capture_output=True, timeout=120)
    assert done.returncode in (0, 1), done.stderr
    return dict(json.loads(done.stdout))


def test_scan_reports_auth_and_its_headers(lab: Lab) -> None:
    raw, _ = letter("thue@alpha.com", "scanin")
    inbound = scan(lab, lab.signed(raw, "alpha.com"), "--client-ip", INTERNET_CLIENT, "--mail-from", "thue@alpha.com",
                   "--rcpt", "user@bacninh.gov.vn")  # fmt: skip
    assert inbound["action"] == "accept"
    [value] = [v for n, v in inbound["add_headers"] if n == "Authentication-Results"]  # type: ignore[attr-defined]
    assert "spf=pass" in value and "dkim=pass" in value and "dmarc=pass" in value
    assert "auth" in inbound["duration_ms"]  # type: ignore[operator]
    spoofed = scan(
        lab, raw, "--client-ip", INTERNET_CLIENT, "--mail-from", "x@beta.com", "--rcpt", "user@bacninh.gov.vn"
    )
    assert spoofed["action"] == "reject"
    hits = [(h["check"], h["rule"]) for h in spoofed["hits"]]  # type: ignore[attr-defined,index]
    assert hits == [("auth", "spf-fail"), ("auth", "dmarc-reject")], hits  # the refusal, and no tag weight on top
    raw, _ = letter("vanthu@bacninh.gov.vn", "scanout", to="partner@example.org")
    outbound = scan(lab, raw, "--client-ip", TRUSTED_RELAY, "--mail-from", "vanthu@bacninh.gov.vn",
                    "--rcpt", "partner@example.org")  # fmt: skip
    assert outbound["action"] == "accept"
    [signature] = [v for n, v in outbound["add_headers"] if n == "DKIM-Signature"]  # type: ignore[attr-defined]
    checked = independent_verify(lab, f"DKIM-Signature: {signature}\r\n".encode() + raw)
    assert checked.returncode == 0, checked


# ---- last: DNS goes away ------------------------------------------------------------------------


def test_a_dns_outage_delivers_with_temperror(lab: Lab) -> None:
    """delta.com was never asked before: nothing cached. The resolver is stopped, then started again."""
    raw, mid = letter("thue@delta.com", "outage")
    signed = lab.signed(raw, "delta.com")
    lab.stack.dns.stop()
    try:
        reply = send(lab, signed, "thue@delta.com")
    finally:
        lab.stack.dns.start()
    assert reply.accepted, reply
    value = ours(delivered(lab, mid))
    assert "spf=temperror" in value and "dkim=temperror" in value and "dmarc=temperror" in value


def test_an_8bit_helo_name_does_not_stop_the_connection(lab: Lab) -> None:
    """HELO is now a milter step: a name in UTF-8 reaches it and must not tempfail the client.

    (Postfix itself answers 500 5.5.2 to a HELO that is not valid UTF-8: such a name never reaches us.)
    """
    raw, mid = letter("mailer-daemon@beta.com", "helo8bit")
    with socket.create_connection(("127.0.0.1", lab.stack.smtp_port), timeout=30,
                                  source_address=(INTERNET_CLIENT, 0)) as conn:  # fmt: skip
        reader = conn.makefile("rb")

        def say(line: bytes) -> bytes:
            conn.sendall(line + b"\r\n")
            answer = reader.readline()
            while answer[3:4] == b"-":
                answer = reader.readline()
            return answer

        assert reader.readline().startswith(b"220")
        assert say("EHLO hà-nội.example.org".encode()).startswith(b"250")
        assert say(b"MAIL FROM:<>").startswith(b"250")
        assert say(b"RCPT TO:<user@bacninh.gov.vn>").startswith(b"250")
        assert say(b"DATA").startswith(b"354")
        answer = say(raw.replace(b"\r\n.", b"\r\n..") + b".")
        assert answer.startswith(b"250"), answer
        say(b"QUIT")
    assert "smtp.helo=" in ours(delivered(lab, mid))
