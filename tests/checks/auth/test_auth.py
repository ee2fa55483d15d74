"""SPF, DKIM, DMARC and outbound signing against a real dnsmasq whose TXT records are made here.

The keys are generated at test time (`govmilter dkim keygen`'s code); dnsmasq answers the SPF,
DMARC and DKIM records of three sender domains and of the local domain:
alpha.com (SPF allows 127.0.0.2, p=reject, RSA and Ed25519 keys), beta.com (SPF does not allow
127.0.0.2, p=none), gamma.com (p=quarantine).
"""

from __future__ import annotations

import email.utils
from collections.abc import Iterator
from pathlib import Path

import pytest

from govmilter.checks.auth import dkim as dkim_mod
from govmilter.checks.auth import dmarc as dmarc_mod
from govmilter.checks.auth.check import AuthCheck
from govmilter.checks.auth.signing import keygen, load_key, public_record, sign
from govmilter.checks.auth.spf import check_spf
from govmilter.clients.dns import Budget, DnsClient
from govmilter.config import DkimKey
from govmilter.decision import forged_headers
from govmilter.model import Action
from govmilter.pipeline import CHECK_NAMES
from stack import Dns, free_dns_port
from support.harness import Harness

OTHERS = [name for name in CHECK_NAMES if name not in ("auth", "content", "dkim")]
CLIENT = "127.0.0.2"


class Zone:
    def __init__(self, root: Path):
        self.keys: dict[str, Path] = {}
        for domain, selector, kind in (
            ("alpha.com", "sel1", "rsa"),
            ("alpha.com", "sel2", "ed25519"),
            ("bacninh.gov.vn", "s1", "rsa"),
        ):
            path = root / f"{domain}.{selector}.pem"
            keygen(domain, selector, kind, str(path))
            self.keys[f"{selector}.{domain}"] = path
        txt = [
            ("alpha.com", "v=spf1 ip4:127.0.0.2 -all"),
            ("_dmarc.alpha.com", "v=DMARC1; p=reject"),
            ("beta.com", "v=spf1 ip4:192.0.2.1 -all"),
            ("_dmarc.beta.com", "v=DMARC1; p=none"),
            ("gamma.com", "v=spf1 -all"),
            ("_dmarc.gamma.com", "v=DMARC1; p=quarantine"),
            ("helo.alpha.com", "v=spf1 ip4:127.0.0.2 -all"),
        ]
        txt += [(f"{name.split('.', 1)[0]}._domainkey.{name.split('.', 1)[1]}", public_record(str(path)))
                for name, path in self.keys.items()]  # fmt: skip
        self.dns = Dns(root / "dns", free_dns_port(), records=(), ttl=300, txt=txt)
        self.dns.start()

    def key(self, selector: str, domain: str) -> Path:
        return self.keys[f"{selector}.{domain}"]


@pytest.fixture(scope="module")
def zone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zone]:
    made = Zone(tmp_path_factory.mktemp("authzone"))
    yield made
    made.dns.stop()


def message(sender: str, subject: str = "Thong bao", extra: str = "") -> bytes:
    return (
        f"From: Cuc Thue <{sender}>\r\nTo: user@bacninh.gov.vn\r\nSubject: {subject}\r\n"
        f"Date: {email.utils.formatdate()}\r\nMessage-ID: <{subject.replace(' ', '.')}@x>\r\n{extra}"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nNoi dung thu.\r\n"
    ).encode()


def signed(zone: Zone, raw: bytes, selector: str, domain: str) -> bytes:
    key = load_key(DkimKey(domain, selector, str(zone.key(selector, domain))))
    return f"DKIM-Signature: {sign(raw, key)}\r\n".encode() + raw


def harness(zone: Zone, *overrides: str) -> Harness:
    return Harness([f"dns.port={zone.dns.port}", 'auth.authserv_id="gw.bacninh.gov.vn"', *overrides], skip=OTHERS)


def auth_results(headers: tuple[tuple[str, str], ...]) -> str:
    values = [v for n, v in headers if n == "Authentication-Results"]
    assert len(values) == 1, headers
    return values[0]


# ---- the methods, one by one ----


def test_spf_results_from_the_real_zone(zone: Zone) -> None:
    client = DnsClient("127.0.0.1", zone.dns.port)
    try:
        assert check_spf(CLIENT, "a@alpha.com", "h", client, Budget(2)).result == "pass"
        assert check_spf(CLIENT, "a@beta.com", "h", client, Budget(2)).result == "fail"
        assert check_spf(CLIENT, "a@nothing.example.org", "h", client, Budget(2)).result == "none"
        null = check_spf(CLIENT, "", "helo.alpha.com", client, Budget(2))  # the null sender: the HELO name
        assert (null.result, null.scope, null.domain) == ("pass", "helo", "helo.alpha.com")
    finally:
        client.close()


@pytest.mark.parametrize("selector", ["sel1", "sel2"])  # RSA and Ed25519
def test_dkim_pass_and_a_changed_body_fails(zone: Zone, selector: str) -> None:
    client = DnsClient("127.0.0.1", zone.dns.port)
    try:
        raw = signed(zone, message("a@alpha.com"), selector, "alpha.com")
        [result] = dkim_mod.verify_all(raw, client, Budget(2), 5)
        assert (result.result, result.domain, result.selector) == ("pass", "alpha.com", selector)
        [changed] = dkim_mod.verify_all(raw.replace(b"Noi dung", b"Noi dung khac"), client, Budget(2), 5)
        assert changed.result == "fail"
    finally:
        client.close()


def test_every_signature_is_verified_and_a_missing_key_is_permerror(zone: Zone) -> None:
    client = DnsClient("127.0.0.1", zone.dns.port)
    try:
        raw = signed(zone, signed(zone, message("a@alpha.com"), "sel1", "alpha.com"), "sel2", "alpha.com")
        raw = raw.replace(b"s=sel2", b"s=gone", 1)  # the top signature names a selector with no key
        results = dkim_mod.verify_all(raw, client, Budget(2), 5)
        assert [(r.result, r.selector) for r in results] == [("permerror", "gone"), ("pass", "sel1")]
    finally:
        client.close()


def test_dkim_dns_failure_is_temperror_never_fail(zone: Zone) -> None:
    raw = signed(zone, message("a@alpha.com"), "sel1", "alpha.com")
    closed = DnsClient("127.0.0.1", free_dns_port())  # nothing listens: every lookup fails at once
    try:
        [result] = dkim_mod.verify_all(raw, closed, Budget(2), 5)
        assert result.result == "temperror"
    finally:
        closed.close()


def test_dmarc_record_parsing_and_alignment() -> None:
    record = dmarc_mod.parse_record("v=DMARC1; p=quarantine; sp=reject; pct=50; adkim=s")
    assert record == dmarc_mod.Record("quarantine", "reject", 50, "s", "r")
    assert dmarc_mod.parse_record("v=spf1 -all") is None
    assert dmarc_mod.parse_record("v=DMARC1; p=bogus") is None
    assert dmarc_mod.aligned("mail.alpha.com", "alpha.com", "r")
    assert not dmarc_mod.aligned("mail.alpha.com", "alpha.com", "s")
    # gov.vn is a public suffix: two provinces are two organisational domains
    assert not dmarc_mod.aligned("hanoi.gov.vn", "bacninh.gov.vn", "r")
    assert dmarc_mod.from_domain(["A <a@Alpha.COM>"]) == "alpha.com"
    assert dmarc_mod.from_domain(["a@alpha.com, b@beta.com"]) is None


# ---- the check through the pipeline ----


def test_aligned_pass_is_accepted_with_authentication_results(zone: Zone) -> None:
    h = harness(zone)
    raw = signed(zone, message("thue@alpha.com"), "sel1", "alpha.com")
    result = h.scan(raw, mail_from="thue@alpha.com", client_ip=CLIENT)
    assert result.verdict.action is Action.ACCEPT
    value = auth_results(result.verdict.headers)
    assert value.startswith("gw.bacninh.gov.vn; spf=pass smtp.mailfrom=alpha.com")
    assert "dkim=pass header.d=alpha.com header.s=sel1" in value
    assert "dmarc=pass policy.dmarc=reject header.from=alpha.com" in value
    sample = h.metrics.registry.get_sample_value
    assert sample("govmilter_auth_results_total", {"method": "dmarc", "result": "pass"}) == 1
    assert sample("govmilter_dns_lookups_total", {"purpose": "spf", "zone": "", "result": "found"}) == 1


def test_spoofed_sender_of_a_reject_domain_is_refused(zone: Zone) -> None:
    h = harness(zone)
    result = h.scan(message("thue@alpha.com"), mail_from="bounce@beta.com", client_ip=CLIENT)
    assert result.verdict.action is Action.REJECT
    assert result.verdict.smtp_reply().startswith("550 5.7.1 ")
    assert "alpha.com publishes DMARC p=reject" in result.verdict.text
    assert h.metrics.registry.get_sample_value("govmilter_dmarc_policy_total", {"action": "reject"}) == 1


@pytest.mark.parametrize("setting", ["tag", "monitor"])
def test_dmarc_reject_can_tag_or_monitor(zone: Zone, setting: str) -> None:
    h = harness(zone, f'auth.dmarc_reject="{setting}"')
    # an envelope domain without SPF: only the DMARC weight scores (8, below the reject threshold 10)
    result = h.scan(message("thue@alpha.com"), mail_from="bounce@nothing.example.org", client_ip=CLIENT)
    assert result.verdict.action is Action.ACCEPT
    headers = dict(result.verdict.headers)
    assert "dmarc=fail" in headers["Authentication-Results"]
    if setting == "tag":
        assert "auth/dmarc-reject-tagged=8" in headers["X-Spam-Report"]
    else:
        assert headers["X-Govmilter-Monitor"] == "check=auth rule=dmarc-reject would=reject"


def test_p_none_failure_is_delivered_with_dmarc_fail_and_scored(zone: Zone) -> None:
    h = harness(zone)
    result = h.scan(message("a@beta.com"), mail_from="a@beta.com", client_ip=CLIENT)
    assert result.verdict.action is Action.ACCEPT
    headers = dict(result.verdict.headers)
    assert 'spf=fail reason="SPF fail - not authorized" smtp.mailfrom=beta.com' in headers["Authentication-Results"]
    assert "dmarc=fail" in headers["Authentication-Results"]
    assert "auth/spf-fail=3" in headers["X-Spam-Report"] and "auth/dmarc-fail-none=2" in headers["X-Spam-Report"]


def test_p_quarantine_failure_scores_and_tags(zone: Zone) -> None:
    h = harness(zone)
    result = h.scan(message("a@gamma.com"), mail_from="a@gamma.com", client_ip=CLIENT)
    assert result.verdict.action is Action.ACCEPT
    headers = dict(result.verdict.headers)
    assert headers["X-Govmilter-DMARC"].startswith("fail gamma.com p=quarantine")
    assert "auth/dmarc-quarantine=5" in headers["X-Spam-Report"]


def test_dkim_pass_with_spf_fail_is_delivered(zone: Zone) -> None:
    h = harness(zone)
    raw = signed(zone, message("thue@alpha.com"), "sel2", "alpha.com")
    result = h.scan(raw, mail_from="thue@alpha.com", client_ip="127.0.0.9")  # not in alpha.com's SPF
    assert result.verdict.action is Action.ACCEPT
    value = auth_results(result.verdict.headers)
    assert "spf=fail" in value and "dkim=pass" in value and "dmarc=pass" in value


def test_dns_outage_delivers_with_temperror(zone: Zone) -> None:
    h = Harness([f"dns.port={free_dns_port()}", "dns.budget=1"], skip=OTHERS)
    raw = signed(zone, message("thue@alpha.com"), "sel1", "alpha.com")
    result = h.scan(raw, mail_from="thue@alpha.com", client_ip=CLIENT)
    assert result.verdict.action is Action.ACCEPT
    value = auth_results(result.verdict.headers)
    assert "spf=temperror" in value and "dkim=temperror" in value and "dmarc=temperror" in value
    check = next(c for c in h.pipeline.checks if isinstance(c, AuthCheck))
    assert check.health()["ok"] is False  # /health says degraded


def test_forged_authentication_results_with_our_id_is_removed(zone: Zone) -> None:
    h = harness(zone)
    extra = (
        "Authentication-Results: gw.bacninh.gov.vn; spf=pass smtp.mailfrom=alpha.com; dmarc=pass\r\n"
        "Authentication-Results: mx.other.example; spf=pass\r\n"
    )
    result = h.scan(message("a@beta.com", extra=extra), mail_from="a@beta.com", client_ip=CLIENT)
    assert result.verdict.action is Action.ACCEPT
    assert forged_headers(result.tx) == [("Authentication-Results", 1)]  # ours only; the other stays


def test_trusted_relays_and_authenticated_users_are_not_checked(zone: Zone) -> None:
    h = harness(zone)
    result = h.scan(message("thue@alpha.com"), mail_from="bounce@beta.com", client_ip=CLIENT, auth_user="u")
    assert result.verdict.action is Action.ACCEPT
    assert not [n for n, _ in result.verdict.headers if n == "Authentication-Results"]


# ---- outbound signing ----


def test_outbound_mail_of_a_local_domain_is_signed_and_verifies(zone: Zone) -> None:
    key = zone.key("s1", "bacninh.gov.vn")
    h = harness(zone, f'dkim.keys=[{{domain="bacninh.gov.vn", selector="s1", key_file="{key}"}}]')
    raw = message("vanthu@bacninh.gov.vn")
    result = h.scan(raw, mail_from="vanthu@bacninh.gov.vn", rcpts=["x@example.org"], auth_user="vanthu")
    assert result.verdict.action is Action.ACCEPT
    [value] = [v for n, v in result.verdict.headers if n == "DKIM-Signature"]
    assert "d=bacninh.gov.vn" in value and "s=s1" in value and "c=relaxed/relaxed" in value
    client = DnsClient("127.0.0.1", zone.dns.port)
    try:
        [check] = dkim_mod.verify_all(f"DKIM-Signature: {value}\r\n".encode() + raw, client, Budget(2), 5)
        assert check.result == "pass"
    finally:
        client.close()
    sample = {"domain": "bacninh.gov.vn", "result": "signed"}
    assert h.metrics.registry.get_sample_value("govmilter_dkim_signatures_total", sample) == 1
    # inbound mail and other domains are not signed
    inbound = h.scan(raw, mail_from="vanthu@bacninh.gov.vn", client_ip=CLIENT)
    assert not [n for n, _ in inbound.verdict.headers if n == "DKIM-Signature"]


def test_keygen_writes_a_private_file_and_never_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "k.pem"
    record = keygen("bacninh.gov.vn", "s9", "ed25519", str(out))
    assert out.stat().st_mode & 0o777 == 0o600
    assert record.startswith('s9._domainkey.bacninh.gov.vn. IN TXT ( "v=DKIM1; k=ed25519; p=')
    with pytest.raises(FileExistsError):
        keygen("bacninh.gov.vn", "s9", "rsa", str(out))
