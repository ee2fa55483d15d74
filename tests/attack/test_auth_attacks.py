"""Attacks on the `auth` check: forged Authentication-Results, From fields that dodge DMARC, DKIM l=,
signature floods and huge DNS answers. Each test states the hostile input and what the gateway does.

A real dnsmasq answers the records made here: alpha.com (SPF allows 127.0.0.2, DMARC p=reject, an
RSA key), evil.example (the attacker's own domain: SPF allows 127.0.0.2, no DMARC record), huge
DKIM key records (a 16 kB TXT record holding a 16 384-bit key with a 16 384-bit exponent) and a
16 kB SPF record.
"""

from __future__ import annotations

import base64
import email.utils
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from govmilter.checks.auth.results import claims
from govmilter.checks.auth.signing import keygen, load_key, public_record, sign
from govmilter.config import DkimKey
from govmilter.decision import forged_headers
from govmilter.model import AUTH_SUMMARY_KEY, Action
from govmilter.offline import ScanResult
from govmilter.pipeline import CHECK_NAMES
from stack import Dns, free_dns_port
from support.harness import Harness

OTHERS = [name for name in CHECK_NAMES if name not in ("auth", "content", "dkim")]
CLIENT = "127.0.0.2"
AUTHSERV = "gw.bacninh.gov.vn"


def _der_length(size: int) -> bytes:
    if size < 0x80:
        return bytes([size])
    raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(body)) + body


def _integer(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def huge_key_record(bits: int) -> str:
    """A DKIM record whose RSA key has a `bits`-bit modulus and a `bits`-bit public exponent."""
    rng = random.Random(bits)
    modulus, exponent = rng.getrandbits(bits) | (1 << (bits - 1)) | 1, rng.getrandbits(bits) | (1 << (bits - 1)) | 1
    rsa_oid = _der(0x30, bytes.fromhex("06092a864886f70d0101010500"))
    spki = _der(0x30, rsa_oid + _der(0x03, b"\x00" + _der(0x30, _integer(modulus) + _integer(exponent))))
    return f"v=DKIM1; k=rsa; p={base64.b64encode(spki).decode()}"


class Zone:
    def __init__(self, root: Path):
        self.key_file = root / "alpha.pem"
        keygen("alpha.com", "sel1", "rsa", str(self.key_file))
        big_spf = "v=spf1 " + " ".join(f"ip4:10.{i // 250}.{i % 250}.0/24" for i in range(900)) + " ip4:127.0.0.2 -all"
        txt = [
            ("alpha.com", f"v=spf1 ip4:{CLIENT} -all"),
            ("_dmarc.alpha.com", "v=DMARC1; p=reject"),
            ("sel1._domainkey.alpha.com", public_record(str(self.key_file))),
            ("evil.example", f"v=spf1 ip4:{CLIENT} -all"),
            ("big._domainkey.alpha.com", huge_key_record(16384)),
            ("bigspf.example", big_spf),
        ]
        self.big_spf_size = len(big_spf)
        self.dns = Dns(root / "dns", free_dns_port(), records=(), ttl=300, txt=txt)
        self.dns.start()

    def harness(self, *overrides: str) -> Harness:
        return Harness([f"dns.port={self.dns.port}", f'auth.authserv_id="{AUTHSERV}"', *overrides], skip=OTHERS)

    def signed(self, raw: bytes) -> bytes:
        key = load_key(DkimKey("alpha.com", "sel1", str(self.key_file)))
        return f"DKIM-Signature: {sign(raw, key)}\r\n".encode() + raw


@pytest.fixture(scope="module")
def zone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zone]:
    made = Zone(tmp_path_factory.mktemp("authattack"))
    yield made
    made.dns.stop()


def message(from_lines: str, extra: str = "", body: str = "Noi dung thu.\r\n") -> bytes:
    """`from_lines`: the whole From field(s), each ending in CRLF ("" for none)."""
    return (
        f"{from_lines}To: user@bacninh.gov.vn\r\nSubject: Thong bao thue\r\nDate: {email.utils.formatdate()}\r\n"
        f"Message-ID: <{random.getrandbits(64):x}@x>\r\n{extra}MIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}"
    ).encode()


def authentication_results(result: ScanResult) -> str:
    """The field the auth check made (recorded whether the message was then accepted or refused)."""
    values = [v for hit in result.tx.hits for n, v in hit.headers if n == "Authentication-Results"]
    assert len(values) == 1, result.verdict.headers
    return values[0].replace("\n\t", " ")


# ---- forged Authentication-Results: every spelling of our authserv-id is removed ----------------


@pytest.mark.parametrize(
    "value",
    [
        "GW.BACNINH.GOV.VN; spf=pass smtp.mailfrom=alpha.com",  # another case
        "gw.bacninh.gov.vn.; dmarc=pass",  # a final dot
        "(checked by the gateway) gw.bacninh.gov.vn; dmarc=pass",  # a comment first
        "gw.bacninh.gov.vn (a comment; with a semicolon); dmarc=pass header.from=alpha.com",
        "((nested) comment) gw.bacninh.gov.vn; dmarc=pass",
        "(a \\) quoted pair) gw.bacninh.gov.vn; dmarc=pass",
        '"gw.bacninh.gov.vn"; dmarc=pass',  # authserv-id is a value: token or quoted-string (RFC 8601 2.2)
        '"gw.bacninh.\\gov.vn"; dmarc=pass',  # a quoted-pair inside the quoted string
        "\r\n\tgw.bacninh.gov.vn;\r\n\tdmarc=pass",  # folded
        "gw.bacninh.gov.vn 1; dmarc=pass",  # with a version (RFC 8601 2.2)
        "gw.bacninh.gov.vn(comment)1; dmarc=pass",
        "gw.bacninh.gov.vn",  # no result at all
    ],
)
def test_every_spelling_of_our_authserv_id_is_a_forgery(value: str) -> None:
    assert claims(value, AUTHSERV), value


@pytest.mark.parametrize(
    "value",
    [
        "mx.other.example; spf=pass (gw.bacninh.gov.vn)",
        "gw.bacninh.gov.vn.evil.example; dmarc=pass",
        '"gw.bacninh.gov.vn x"; dmarc=pass',
        "x gw.bacninh.gov.vn; dmarc=pass",
    ],
)
def test_other_authserv_ids_are_left_alone(value: str) -> None:
    assert not claims(value, AUTHSERV), value


def test_several_forged_fields_are_all_removed_last_first(zone: Zone) -> None:
    extra = (
        "Authentication-Results: mx.partner.example; spf=pass\r\n"
        f"Authentication-Results: {AUTHSERV.upper()}; dmarc=pass\r\n"
        f"authentication-results: ({AUTHSERV}) {AUTHSERV}; dkim=pass\r\n"
        f'Authentication-Results: "{AUTHSERV}"; dmarc=pass\r\n'
    )
    result = zone.harness().scan(message("From: <a@evil.example>\r\n", extra), mail_from="a@evil.example")
    assert result.verdict.action is Action.ACCEPT
    assert forged_headers(result.tx) == [
        ("Authentication-Results", 4),
        ("authentication-results", 3),
        ("Authentication-Results", 2),
    ]


def test_authentication_results_inside_an_attached_message_are_not_touched(zone: Zone) -> None:
    boundary = "b1"
    inner = f"Authentication-Results: {AUTHSERV}; dmarc=pass\r\nFrom: <x@alpha.com>\r\nSubject: cu\r\n\r\nthu cu\r\n"
    body = (
        f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nxem thu dinh kem\r\n"
        f"--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n{inner}\r\n--{boundary}--\r\n"
    )
    multipart = f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'.encode()
    raw = message("From: <a@evil.example>\r\n", body=body).replace(
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n", multipart, 1
    )
    result = zone.harness().scan(raw, mail_from="a@evil.example")
    assert result.verdict.action is Action.ACCEPT
    assert forged_headers(result.tx) == []


# ---- From fields that try to keep DMARC from applying ------------------------------------------


@pytest.mark.parametrize(
    "from_lines",
    [
        "From: <thue@evil.example>\r\nFrom: Cuc Thue <thue@alpha.com>\r\n",  # two From fields
        "From: Cuc Thue <thue@alpha.com>\r\nFrom: <thue@evil.example>\r\n",
        "From: <thue@evil.example>, Cuc Thue <thue@alpha.com>\r\n",  # two authors in one field
        "From: thue@alpha.com <thue@evil.example>\r\n",  # an address as an unquoted display name
        "From: Cuc Thue <thue@alpha.com>, <a@evil.example>, <b@evil.example>\r\n",
    ],
)
def test_a_second_author_does_not_keep_dmarc_from_applying(zone: Zone, from_lines: str) -> None:
    result = zone.harness().scan(message(from_lines), mail_from="bounce@evil.example")
    assert result.verdict.action is Action.REJECT, authentication_results(result)
    assert "alpha.com publishes DMARC p=reject" in result.verdict.text


@pytest.mark.parametrize(
    "from_lines",
    [
        "From: Cuc Thue <THUE@ALPHA.COM>\r\n",  # upper case
        "From: Cuc Thue <thue@alpha.com.>\r\n",  # a final dot
        "From: thue@alpha.com (Cuc Thue)\r\n",  # a comment
        "From: (Cuc Thue) <thue@alpha.com>\r\n",
        'From: "x@bacninh.gov.vn" <thue@alpha.com>\r\n',  # a display name holding an address
        "From: =?utf-8?q?C=E1=BB=A5c_Thu=E1=BA=BF?= <thue@alpha.com>\r\n",  # an encoded-word name
        "From:\r\n\tCuc Thue\r\n\t<thue@alpha.com>\r\n",  # folded
    ],
)
def test_every_spelling_of_a_single_author_is_judged_by_dmarc(zone: Zone, from_lines: str) -> None:
    result = zone.harness().scan(message(from_lines), mail_from="bounce@evil.example")
    assert result.verdict.action is Action.REJECT
    assert "alpha.com publishes DMARC p=reject" in result.verdict.text


@pytest.mark.parametrize(
    "from_lines",
    [
        "",  # no From at all
        "From: =?utf-8?b?dGh1ZUBhbHBoYS5jb20=?=\r\n",  # the address only as an encoded-word ("thue@alpha.com")
        "From: Cuc Thue\r\n",  # no address
        "From: <thue@>\r\n",
    ],
)
def test_no_author_domain_is_a_permerror_that_scores(zone: Zone, from_lines: str) -> None:
    result = zone.harness().scan(message(from_lines), mail_from="bounce@evil.example")
    value = authentication_results(result)
    assert "dmarc=permerror" in value, value
    assert any(v.rule == "dmarc-no-author" and v.score > 0 for v in result.tx.hits), result.tx.hits


def test_an_internationalized_author_domain_is_looked_up_as_a_label_in_ascii(zone: Zone) -> None:
    result = zone.harness().scan(message("From: <thue@bắcninh.gov.vn>\r\n"), mail_from="bounce@evil.example")
    summary = result.tx.scratch[AUTH_SUMMARY_KEY]
    assert summary.dmarc_domain == "bắcninh".encode("idna").decode() + ".gov.vn", summary


# ---- DKIM l=: a body longer than what was signed ------------------------------------------------


def signed_with_length(zone: Zone, raw: bytes) -> bytes:
    """raw signed by alpha.com with l= (what dkimpy writes with length=True), relaxed/relaxed."""
    import dkim

    key = load_key(DkimKey("alpha.com", "sel1", str(zone.key_file)))
    field = dkim.DKIM(raw, linesep=b"\r\n").sign(b"sel1", b"alpha.com", key.pem,
                                                 canonicalize=(b"relaxed", b"relaxed"), length=True)  # fmt: skip
    return field + raw


def test_content_appended_after_the_signed_length_does_not_pass_dkim(zone: Zone) -> None:
    raw = message("From: Cuc Thue <thue@alpha.com>\r\n", body="Thong bao nop thue.\r\n")
    forged = signed_with_length(zone, raw) + b"Tai file tai http://evil.example/thue.exe\r\n"
    result = zone.harness().scan(forged, mail_from="bounce@evil.example")
    assert result.verdict.action is Action.REJECT  # DMARC: no aligned pass left
    dkims = result.tx.scratch[AUTH_SUMMARY_KEY].dkim
    assert dkims == (("policy", "alpha.com"),)


def test_a_signed_length_that_covers_the_whole_body_still_passes(zone: Zone) -> None:
    raw = signed_with_length(zone, message("From: Cuc Thue <thue@alpha.com>\r\n", body="Thong bao.\r\n\r\n"))
    result = zone.harness().scan(raw, mail_from="thue@alpha.com")
    assert result.verdict.action is Action.ACCEPT
    assert "dkim=pass header.d=alpha.com" in authentication_results(result)


# ---- 50 signatures: max_signatures verified, the rest stated once, the DNS budget kept ---------


def test_fifty_signatures_cost_at_most_max_signatures_key_lookups(zone: Zone) -> None:
    raw = message("From: Cuc Thue <thue@alpha.com>\r\n")
    fakes = "".join(
        f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=d{i}.evil.example; s=s{i}; h=from; "
        f"bh=AAAA; b=AAAA\r\n"
        for i in range(49)
    )
    h = zone.harness("auth.max_signatures=5")
    signed = zone.signed(raw)  # the real signature on top, 49 made-up ones under it
    head, _, rest = signed.partition(b"\r\n")
    result = h.scan(head + b"\r\n" + fakes.encode() + rest, mail_from="bounce@evil.example")
    assert result.verdict.action is Action.ACCEPT  # alpha.com's own signature verified
    lookups = sum(s.value for s in h.metrics.dns_lookups.collect()[0].samples
                  if s.name.endswith("_total") and s.labels["purpose"] == "dkim")  # fmt: skip
    assert lookups <= 5
    value = authentication_results(result)
    assert value.count("dkim=") == 6, value  # five verified, the rest said once
    assert 'dkim=neutral reason="45 more signatures not checked' in value
    assert len(value) < 2000


# ---- huge DNS answers --------------------------------------------------------------------------


def test_a_huge_dkim_key_is_refused_before_any_arithmetic(zone: Zone) -> None:
    raw = message("From: Cuc Thue <thue@alpha.com>\r\n")
    key = load_key(DkimKey("alpha.com", "big", str(zone.key_file)))  # signed with a real key, named "big"
    forged = f"DKIM-Signature: {sign(raw, key)}\r\n".encode() + raw
    result = zone.harness().scan(forged, mail_from="bounce@evil.example")
    value = authentication_results(result)
    assert 'dkim=permerror reason="key too large' in value, value


def test_a_huge_spf_record_is_judged(zone: Zone) -> None:
    assert zone.big_spf_size > 15000
    result = zone.harness().scan(message("From: <a@bigspf.example>\r\n"), mail_from="a@bigspf.example")
    assert "spf=pass smtp.mailfrom=bigspf.example" in authentication_results(result)


def test_signatures_whose_keys_never_answer_do_not_spend_the_dmarc_lookup(
    zone: Zone, tmp_path: Path
) -> None:
    """Five signatures naming keys under a domain whose DNS never answers: the budget goes, DMARC still applies."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))  # bound, never read: every query there times out
    dns = Dns(tmp_path / "dns", free_dns_port(), records=(), ttl=300, txt=[("_dmarc.alpha.com", "v=DMARC1; p=reject")],
              options=[f"--server=/slow.example/127.0.0.1#{silent.getsockname()[1]}"])  # fmt: skip
    dns.start()
    try:
        fake = "DKIM-Signature: v=1; a=rsa-sha256; d=d{}.slow.example; s=s; h=from; bh=AAAA; b=AAAA\r\n"
        fakes = "".join(fake.format(i) for i in range(5))
        raw = fakes.encode() + message("From: Cuc Thue <thue@alpha.com>\r\n")
        h = Harness([f"dns.port={dns.port}", "dns.budget=1.0", f'auth.authserv_id="{AUTHSERV}"'], skip=OTHERS)
        result = h.scan(raw, mail_from="bounce@evil.example")
        value = authentication_results(result)
        assert "dkim=temperror" in value, value
        assert result.verdict.action is Action.REJECT, value  # not dmarc=temperror, which never refuses
    finally:
        dns.stop()
        silent.close()
