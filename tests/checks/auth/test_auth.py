"""SPF, DKIM, DMARC and outbound signing against a real dnsmasq whose TXT records are made here.

The keys are generated at test time (`govmilter dkim keygen`'s code); dnsmasq answers the SPF,
DMARC and DKIM records of three sender domains and of the local domain:
alpha.com (SPF allows 127.0.0.2, p=reject, RSA and Ed25519 keys), beta.com (SPF does not allow
127.0.0.2, p=none), gamma.com (p=quarantine); two ARC sealers, list.example.net (a mailing list the tests trust) and
rogue.example.org.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable, Iterator
from pathlib import Path

import dkim
import pytest

from govmilter.checks.auth import arc as arc_mod
from govmilter.checks.auth import dkim as dkim_mod
from govmilter.checks.auth import dmarc as dmarc_mod
from govmilter.checks.auth.check import HEADER, AuthCheck
from govmilter.checks.auth.results import MethodResult, header_value
from govmilter.checks.auth.signing import keygen, load_key, public_record, sign
from govmilter.checks.auth.spf import check_spf
from govmilter.clients.dns import Budget, DnsClient
from govmilter.config import DkimKey
from govmilter.decision import forged_headers
from govmilter.model import Action
from govmilter.offline import ScanResult
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
            ("list.example.net", "arc1", "rsa"),  # ARC sealers (dkimpy seals with RSA only)
            ("rogue.example.org", "arc1", "rsa"),
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
    """The one Authentication-Results value, unfolded (folds are tested on their own)."""
    values = [v for n, v in headers if n == "Authentication-Results"]
    assert len(values) == 1, headers
    assert all(len(line) <= 998 for line in f"Authentication-Results: {values[0]}".split("\n"))
    return values[0].replace("\n\t", " ")


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


# ---- ARC (RFC 8617): a mailing list breaks DKIM, its seal may override DMARC ----

LIST = "list.example.net"
ROGUE = "rogue.example.org"
SAW_PASS = (
    "dkim=pass header.d=alpha.com header.s=sel1; spf=pass smtp.mailfrom=alpha.com; dmarc=pass header.from=alpha.com"
)


def through_list(zone: Zone, raw: bytes, sealer: str = LIST, recorded: str = SAW_PASS) -> bytes:
    """`raw` as a mailing list relays it: checked on arrival (its Authentication-Results), subject tag
    and footer added (the author's DKIM signature breaks), then ARC-sealed by `sealer` (dkimpy)."""
    received = f"Authentication-Results: {sealer}; {recorded}\r\n".encode() + raw
    changed = received.replace(b"Subject: ", b"Subject: [ds-tinh] ", 1) + b"-- \r\nDanh sach thu ds-tinh\r\n"
    key = load_key(DkimKey(sealer, "arc1", str(zone.key("arc1", sealer))))
    arc_set = dkim.arc_sign(changed, b"arc1", sealer.encode(), key.pem, sealer.encode(), logger=dkim_mod._quiet)
    assert len(arc_set) == 3, "dkimpy made no ARC set"
    return b"".join(arc_set) + changed


def auth_reason(result: ScanResult) -> str:
    """The results as the auth check's decision line gives them."""
    [found] = [v.reason for v in result.tx.hits if v.check == "auth" and v.headers and v.headers[0][0] == HEADER]
    return found


def list_post(zone: Zone) -> bytes:
    return signed(zone, message("thue@alpha.com", subject="Thong bao ds"), "sel1", "alpha.com")


def arc_harness(zone: Zone, *sealers: str) -> Harness:
    return harness(zone, f"auth.trusted_arc_sealers={list(sealers)!r}".replace("'", '"'))


def scan_from_list(h: Harness, raw: bytes, mail_from: str = "ds-tinh-bounces@list.example.net") -> ScanResult:
    return h.scan(raw, mail_from=mail_from, client_ip=CLIENT)


def test_list_message_fails_dmarc_without_arc(zone: Zone) -> None:
    """The scenario is real: the list's changes break the author's signature, DMARC p=reject refuses."""
    client = DnsClient("127.0.0.1", zone.dns.port)
    try:
        relayed = through_list(zone, list_post(zone))
        [author] = dkim_mod.verify_all(relayed, client, Budget(2), 5)
        assert (author.result, author.domain) == ("fail", "alpha.com")
        chain = arc_mod.verify_chain(relayed, client, Budget(2))
        assert (chain.result, chain.sealers) == ("pass", (LIST,))
    finally:
        client.close()
    result = scan_from_list(arc_harness(zone), relayed)  # no trusted sealer configured
    assert result.verdict.action is Action.REJECT
    assert result.verdict.smtp_reply().startswith("550 5.7.1 ")


def test_trusted_sealer_overrides_the_dmarc_failure(zone: Zone) -> None:
    h = arc_harness(zone, LIST)
    result = scan_from_list(h, through_list(zone, list_post(zone)))
    assert result.verdict.action is Action.ACCEPT
    headers = dict(result.verdict.headers)
    value = auth_results(result.verdict.headers)
    # the failure stays visible, with why its policy was not applied, and the chain's result
    assert 'dmarc=fail reason="policy overridden: trusted_forwarder, ARC sealed by list.example.net"' in value
    assert "policy.dmarc=reject header.from=alpha.com" in value
    assert 'arc=pass reason="sealed by list.example.net"' in value
    assert "dkim=fail" in value
    assert headers["X-Govmilter-DMARC"].endswith("overridden by trusted ARC sealer list.example.net")
    assert h.metrics.registry.get_sample_value("govmilter_dmarc_policy_total", {"action": "arc-override"}) == 1
    assert h.metrics.registry.get_sample_value("govmilter_auth_results_total", {"method": "arc", "result": "pass"}) == 1


def test_untrusted_sealer_is_refused(zone: Zone) -> None:
    h = arc_harness(zone, LIST)
    result = scan_from_list(h, through_list(zone, list_post(zone), sealer=ROGUE), "bounce@rogue.example.org")
    assert result.verdict.action is Action.REJECT
    assert result.verdict.smtp_reply().startswith("550 5.7.1 ")
    assert "alpha.com publishes DMARC p=reject" in result.verdict.text


@pytest.mark.parametrize(
    "tamper",
    [
        # what the seal covers is changed: the recorded results (ARC-Seal no longer verifies)
        lambda raw: raw.replace(b"spf=pass smtp.mailfrom=alpha.com", b"spf=fail smtp.mailfrom=alpha.com", 1),
        # the body is changed after sealing: the newest ARC-Message-Signature no longer verifies
        lambda raw: raw.replace(b"Noi dung thu.", b"Noi dung thu da sua.", 1),
        # the seal claims an instance its chain does not have
        lambda raw: raw.replace(b"ARC-Seal: i=1;", b"ARC-Seal: i=2;", 1),
    ],
    ids=["seal", "body", "instance"],
)
def test_a_broken_chain_never_overrides(zone: Zone, tamper: Callable[[bytes], bytes]) -> None:
    relayed = tamper(through_list(zone, list_post(zone)))
    client = DnsClient("127.0.0.1", zone.dns.port)
    try:
        assert arc_mod.verify_chain(relayed, client, Budget(2)).result == "fail"
    finally:
        client.close()
    result = scan_from_list(arc_harness(zone, LIST), relayed)
    assert result.verdict.action is Action.REJECT
    assert "dmarc=fail" in auth_reason(result) and "arc=fail" in auth_reason(result)


def test_every_sealer_must_be_trusted(zone: Zone) -> None:
    """An untrusted hop before the trusted one: the chain is as trustworthy as its least trusted sealer."""
    first = through_list(zone, list_post(zone), sealer=ROGUE)
    both = through_list(zone, first, recorded=f"arc=pass; {SAW_PASS}")
    client = DnsClient("127.0.0.1", zone.dns.port)
    try:
        chain = arc_mod.verify_chain(both, client, Budget(2))
        assert (chain.result, chain.sealers) == ("pass", (ROGUE, LIST))
    finally:
        client.close()
    assert scan_from_list(arc_harness(zone, LIST), both).verdict.action is Action.REJECT
    assert scan_from_list(arc_harness(zone, LIST, ROGUE), both).verdict.action is Action.ACCEPT


def test_the_recorded_pass_must_be_for_the_author(zone: Zone) -> None:
    """A trusted list that authenticated only itself (its own DKIM) vouches for nothing about alpha.com."""
    relayed = through_list(zone, list_post(zone), recorded="dkim=pass header.d=list.example.net; spf=none; dmarc=none")
    assert scan_from_list(arc_harness(zone, LIST), relayed).verdict.action is Action.REJECT


def test_recorded_pass_reads_the_identifier_of_each_method() -> None:
    aar = "i=1; list.example.net; dkim=pass (good) header.d=mail.alpha.com; spf=fail smtp.mailfrom=alpha.com"
    assert arc_mod.recorded_pass(aar, "alpha.com")  # relaxed alignment: same organisational domain
    assert not arc_mod.recorded_pass(aar, "beta.com")
    assert not arc_mod.recorded_pass("i=1; x; spf=fail smtp.mailfrom=alpha.com", "alpha.com")
    assert not arc_mod.recorded_pass("i=1; x; dkim=pass header.from=alpha.com", "alpha.com")  # wrong identifier
    assert arc_mod.recorded_pass("i=1; x; dmarc=pass header.from=alpha.com", "alpha.com")
    assert not arc_mod.recorded_pass("i=1; x; dmarc=pass header.from=hanoi.gov.vn", "bacninh.gov.vn")
    # the authserv-id is never read as a result
    assert not arc_mod.recorded_pass("i=1; dkim=pass header.d=alpha.com; none", "alpha.com")


def test_arc_never_weakens_the_forwarding_check(zone: Zone) -> None:
    """A trusted sealer's valid chain on an automatic forward (SRS): the forward is still refused."""
    only = [name for name in CHECK_NAMES if name not in ("auth", "content", "dkim", "forwarding")]
    h = Harness([f"dns.port={zone.dns.port}", 'auth.authserv_id="gw.bacninh.gov.vn"',
                 f'auth.trusted_arc_sealers=["{LIST}"]'], skip=only)  # fmt: skip
    relayed = through_list(zone, list_post(zone))
    assert scan_from_list(h, relayed).verdict.action is Action.ACCEPT
    forward = h.scan(relayed, mail_from="SRS0=q9Wz=TU=alpha.com=thue@list.example.net", client_ip=CLIENT)
    assert forward.verdict.action is Action.REJECT
    assert forward.verdict.check == "forwarding" and forward.verdict.rule == "inbound-srs"
    # the same chain without the forward's envelope was delivered above: ARC overrode DMARC, never forwarding


# ---- Authentication-Results folding (RFC 5322 2.1.1) ----


def test_a_long_authentication_results_is_folded_between_results(zone: Zone) -> None:
    raw = message("thue@alpha.com")
    for selector in ("sel1", "sel2", "sel1", "sel2", "sel1"):  # five signatures, each a result
        raw = signed(zone, raw, selector, "alpha.com")
    result = harness(zone).scan(raw, mail_from="thue@alpha.com", client_ip=CLIENT)
    [value] = [v for n, v in result.verdict.headers if n == "Authentication-Results"]
    lines = f"Authentication-Results: {value}".split("\n")
    assert len(lines) >= 7 and all(len(line) <= 78 for line in lines), lines
    assert all(line.startswith("\t") for line in lines[1:])
    assert lines[0] == "Authentication-Results: gw.bacninh.gov.vn; spf=pass smtp.mailfrom=alpha.com;"
    one, two = "dkim=pass header.d=alpha.com header.s=sel1;", "dkim=pass header.d=alpha.com header.s=sel2;"
    assert [line.strip() for line in lines[1:6]] == [one, two, one, two, one]
    # unfolded, it reads as the one-line form
    assert value.replace("\n\t", " ") == "gw.bacninh.gov.vn; " + "; ".join(
        ["spf=pass smtp.mailfrom=alpha.com"]
        + ["dkim=pass header.d=alpha.com header.s=sel1", "dkim=pass header.d=alpha.com header.s=sel2"] * 2
        + ["dkim=pass header.d=alpha.com header.s=sel1", "dmarc=pass policy.dmarc=reject header.from=alpha.com"]
    )


def test_a_result_longer_than_a_line_folds_between_its_properties_and_stays_under_998() -> None:
    hostile = "x\\" * 300  # a signature's d= as an attacker writes it: escaped, it doubles
    results = [MethodResult("dkim", "permerror", (("header.d", hostile), ("header.s", hostile)), "r" * 500)] * 3
    value = header_value("gw.bacninh.gov.vn", results)
    lines = f"Authentication-Results: {value}".split("\n")
    assert all(len(line) <= 998 for line in lines)
    assert len(lines) >= 9  # each result: method, reason and two properties on lines of their own
    short = header_value("gw", [MethodResult("spf", "pass", (("smtp.mailfrom", "a.vn"),))])
    assert short == "gw; spf=pass smtp.mailfrom=a.vn"  # the common case stays one line


def test_the_adapter_keeps_a_fold_and_nothing_else() -> None:
    from govmilter.runtime import header_value as _header_text  # what the adapter hands libmilter

    assert _header_text("gw; spf=pass;\n\tdkim=pass") == "gw; spf=pass;\n dkim=pass"  # still a fold
    # a newline not followed by white space would start a new field: blanked, as in a reply
    assert _header_text("a\r\nX-Injected: 1\nb") == "a  X-Injected: 1 b"
    assert _header_text("one line") == "one line"
