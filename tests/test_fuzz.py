"""Hostile input: everything that parses wire data, fuzzed with hypothesis.

Header splitting and unfolding, log cleaning, addresses and domain classes,
SRS / +caf_= / BATV senders, header traces, the transfer decoders, zip
directories, the MIME walk on generated trees (random boundaries, encodings,
charsets, file names) and on mangled copies of them (truncated, NUL bytes, long
lines, bare CR or LF), the whole pipeline on generated messages and envelopes,
and the adapter's callbacks as libmilter drives them. Every input must give a
defined result: no exception escapes, every message gets accept/reject/tempfail/
discard, a parse problem never becomes a tempfail (with clamd and DNS left out,
only our own bug could), and the samples the walk keeps stay within their limits.

GOVMILTER_FUZZ_EXAMPLES sets the examples per test (default 300, about half a
minute for the file); the total run is printed at the end of the module.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import functools
import io
import itertools
import os
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest import mock
from urllib.parse import quote

import Milter
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from Milter.testctx import TestCtx as PymilterTestCtx

from govmilter import decision, spool
from govmilter.adapter import GovMilter
from govmilter.checks.dnsbl import link_domains, reversed_ip
from govmilter.checks.forwarding.traces import (
    auto_submitted,
    delivered_to_traces,
    envelope_rewrite,
    envelope_traces,
    exemption,
    header_from,
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
from govmilter.config import load_config
from govmilter.domains import (
    DomainClass,
    Domains,
    domain_of,
    is_under,
    normalize_address,
    normalize_domain,
    split_address,
)
from govmilter.metrics import Metrics
from govmilter.mime import Limits, decoders, walk
from govmilter.mime.archives import local_header_encrypted, looks_like_zip, read_directory
from govmilter.mime.decoders import Base64Decoder, QuotedPrintableDecoder, UUScanner, make_decoder
from govmilter.mime.headers import parse_entity
from govmilter.model import Action, Envelope, MessageFacts, Transaction, Verdict
from govmilter.ruleset import RuleSet
from govmilter.runtime import Runtime
from govmilter.text import links
from govmilter.text.normalize import html_to_text, normalize, strip_diacritics
from support.harness import RULES, Harness
from support.milter_ctx import RecordingCtx

EXAMPLES = int(os.environ.get("GOVMILTER_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
RUNS: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def report_examples(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print how many examples the module ran, for the record (visible with -q)."""
    yield
    total = sum(RUNS.values())
    line = f"fuzz: {total} examples in {len(RUNS)} tests ({EXAMPLES} per test requested)"
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if capture is None or reporter is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line(line)


def ran(name: str) -> None:
    RUNS[name] += 1


# ---- strategies -----------------------------------------------------------------------------

NASTY = [
    "\r\n",
    "\n",
    "\r",
    "\x00",
    "\t",
    " ",
    "\x1b[2J",
    "\x7f",
    "\u2028",
    "\x85",
    "\udcff",
    "\ufeff",
    "=?utf-8?b?",
    "=?UTF-8?Q?",
    "?=",
    "@",
    "<",
    ">",
    ",",
    ";",
    ":",
    '"',
    "\\",
    "(",
    ")",
    "[",
    "]",
    "=",
    "+",
    "-",
    "%",
    "SRS0=",
    "SRS1=",
    "srs0+",
    "+SRS=",
    "+caf_=",
    "prvs=",
    "btv1=",
    "bounces",
    "xn--",
    "xn--zz",
    "gov.vn",
    "bacninh.gov.vn",
    ".",
    "..",
    "\u3002",
    "\uff0e",
    "ß",
    "bắc",
    "İ",
    "example.com",
    "for <",
    "a" * 70,
    "x" * 300,
]

# text as it comes off the wire: any code point, lone surrogates from undecodable bytes, nasties
wire_text = st.one_of(
    st.text(max_size=60),
    st.binary(max_size=60).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.lists(st.one_of(st.sampled_from(NASTY), st.text(max_size=8)), max_size=12).map("".join),
)

LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
LABEL_CHARS = LETTERS + "0123456789-"
label = st.text(alphabet=LABEL_CHARS, min_size=1, max_size=20).filter(lambda s: s[0] != "-" and s[-1] != "-")
domain = st.lists(label, min_size=1, max_size=4).map(".".join)
local_part = st.text(alphabet=LETTERS + "0123456789._-+=", min_size=1, max_size=30)
plain_local = st.text(alphabet=LETTERS + "0123456789._", min_size=1, max_size=20)
token = st.text(alphabet=LETTERS + "0123456789", min_size=1, max_size=10)

DOMAINS = Domains.from_names(["bacninh.gov.vn"], ["gov.vn", "backan.edu.vn"])


# ---- header splitting, unfolding, log cleaning ---------------------------------------------

raw_header_bytes = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from([b"\r\n", b"\n", b"\r", b"\x00", b": ", b"\r\n ", b"\n\t", b"\r\n\r\n", b"Subject:", b"\xff"]),
    ),
    max_size=30,
).map(b"".join)


@FUZZ
@given(raw_header_bytes, st.integers(min_value=1, max_value=64))
@example(b":\r\r\r\n ", 1)  # a bare CR before a fold: found by hypothesis, written back as read
def test_read_message_file_splits_any_bytes(data: bytes, chunk: int) -> None:
    ran("read_message_file")
    with mock.patch.object(spool, "CHUNK", chunk):  # exercise CRLF split across body chunks
        headers, body = spool.read_message_file(io.BytesIO(data))
        body_bytes = b"".join(body)
    for name, value in headers:
        assert isinstance(name, str) and isinstance(value, str)
        assert "\n" not in name  # a value keeps its folds as "\n"
    # the body is what follows the first empty line, with every line end made CRLF
    rest = _after_header(data)
    assert body_bytes == _crlf(rest)
    # written back as Postfix hands them to a milter and read again, they are the same on the wire
    block = spool.header_block(headers)
    again, _ = spool.read_message_file(io.BytesIO(block))
    assert spool.header_block(again) == block


def _after_header(data: bytes) -> bytes:
    """What readline-based splitting leaves for the body (splitlines also splits on bare CR)."""
    stream = io.BytesIO(data)
    for line in iter(stream.readline, b""):
        if line in (b"\n", b"\r\n"):
            return stream.read()
    return b""


def _crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@FUZZ
@given(wire_text, st.integers(min_value=0, max_value=500))
def test_clean_makes_one_bounded_line(value: str, limit: int) -> None:
    ran("clean")
    out = decision.clean(value, limit)
    assert not any(ord(c) < 0x20 or c == "\x7f" for c in out)
    assert len(out) <= limit + 3
    assert out == value or "?" in out or out.endswith("...")


@FUZZ
@given(wire_text, st.lists(wire_text, max_size=4), wire_text, wire_text)
def test_decision_log_line_is_one_line(sender: str, rcpts: list[str], queue_id: str, text: str) -> None:
    ran("log_line")
    env = Envelope(client_ip=text[:40], mail_from=sender, rcpts=rcpts, queue_id=queue_id, auth_user=text)
    tx = Transaction(envelope=env, ruleset=RuleSet("v1", {}))
    verdict = Verdict(Action.REJECT, "content", rule=text, code="550", enhanced="5.7.1", text=text)
    line = decision.log_line(tx, verdict, 0.001)
    assert not any(ord(c) < 0x20 or c == "\x7f" for c in line)
    assert len(line) < 2000


# ---- addresses and domain classes ----------------------------------------------------------


@FUZZ
@given(wire_text)
def test_address_and_domain_parsing_never_raise(value: str) -> None:
    ran("domains")
    name = normalize_domain(value)
    if name:
        assert name.isascii() and name == name.lower() and len(name) <= 253
        assert "" not in name.split(".")
        assert normalize_domain(name) == name  # a normalised name is a fixed point
    split_address(value)
    normalize_address(value)
    found = DOMAINS.classify(value)
    domain_name = domain_of(value)
    if found is DomainClass.LOCAL:
        assert is_under(domain_name, "bacninh.gov.vn")
    elif found is DomainClass.GOVERNMENT:
        assert is_under(domain_name, "gov.vn") or is_under(domain_name, "backan.edu.vn")
    else:
        assert not is_under(domain_name, "gov.vn") and not is_under(domain_name, "backan.edu.vn")


@FUZZ
@given(
    st.lists(label, min_size=0, max_size=3),
    st.sampled_from(["gov.vn", "bacninh.gov.vn", "backan.edu.vn"]),
    plain_local,
    st.sampled_from(["", ".", "upper", "fullwidth", "ideographic"]),
)
def test_label_boundaries_decide_the_class(prefix: list[str], parent: str, user: str, variant: str) -> None:
    ran("domain-classes")
    name = ".".join([*prefix, parent])
    expected = DomainClass.LOCAL if is_under(normalize_domain(name), "bacninh.gov.vn") else DomainClass.GOVERNMENT
    spelled = {
        "": name,
        ".": name + ".",
        "upper": name.upper(),
        "fullwidth": name.replace(".", "\uff0e"),
        "ideographic": name.replace(".", "\u3002"),
    }[variant]
    assert DOMAINS.classify_domain(spelled) is expected
    assert DOMAINS.classify(f"<{user}@{spelled}>") is expected
    glued = "".join(prefix) + parent  # no dot before the parent: not below it (evilgov.vn)
    if prefix and not glued.lower().endswith(("." + "gov.vn", ".backan.edu.vn")):
        assert DOMAINS.classify_domain(glued) is DomainClass.OTHER
    assert DOMAINS.classify_domain(f"{parent}.{prefix[0] if prefix else 'evil'}.com") is DomainClass.OTHER


@FUZZ
@given(local_part.filter(lambda s: not s.startswith("@")), domain)
def test_split_address_takes_the_last_at(user: str, name: str) -> None:
    ran("split_address")
    assert split_address(f"<{user}@{name}>") == (user, name)
    assert split_address(f"@relay.example,@other.example:{user}@{name}") == (user, name)


# ---- SRS, +caf_=, BATV and the header traces -------------------------------------------------


@FUZZ
@given(
    token,
    st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=2),
    domain,
    local_part,
    domain,
    st.sampled_from("=+-"),
    st.sampled_from(["SRS0", "srs0", "Srs0"]),
)
def test_srs0_gives_the_forwarder_and_the_original(
    hash_: str, stamp: str, orig_domain: str, orig_local: str, forwarder: str, sep: str, tag: str
) -> None:
    ran("srs0")
    found = parse_srs(f"{tag}{sep}{hash_}={stamp}={orig_domain}={orig_local}@{forwarder}")
    assert found is not None and found.kind == "srs"
    assert found.forwarder == forwarder
    assert found.original == f"{orig_local}@{orig_domain}"
    traces = envelope_traces(f"{tag}{sep}{hash_}={stamp}={orig_domain}={orig_local}@{forwarder}")
    assert [(t.name, t.forwarder) for t in traces] == [("srs", forwarder)]


@FUZZ
@given(token, domain, token, st.text(alphabet="0123456789ABCDEF", min_size=2, max_size=2), domain, local_part, domain)
def test_srs1_gives_the_last_forwarder_and_the_original(
    hash1: str, first_hop: str, hash0: str, stamp: str, orig_domain: str, orig_local: str, forwarder: str
) -> None:
    ran("srs1")
    found = parse_srs(f"SRS1={hash1}={first_hop}=={hash0}={stamp}={orig_domain}={orig_local}@{forwarder}")
    assert found is not None and found.kind == "srs" and found.forwarder == forwarder
    assert found.original == f"{orig_local}@{orig_domain}"


@FUZZ
@given(plain_local.filter(lambda u: u.lower() not in ("srs0", "srs1")), local_part, domain, domain)
def test_gmail_caf_names_the_forwarding_mailbox(user: str, dest_local: str, dest_domain: str, forwarder: str) -> None:
    ran("caf")
    address = f"{user}+caf_={dest_local}={dest_domain}@{forwarder}"
    found = parse_gmail_caf(address)
    assert found is not None and found.kind == "gmail-caf"
    assert found.forwarder == f"{user}@{forwarder}"
    assert envelope_rewrite(address) == found


@FUZZ
@given(token, plain_local, domain, st.sampled_from(["prvs", "PRVS", "msprvs1", "btv1"]))
def test_batv_is_a_signature_not_a_forward(tag: str, user: str, name: str, scheme: str) -> None:
    ran("batv")
    address = f"{scheme}={tag}={user}@{name}"
    found = parse_batv(address)
    assert found is not None and found.kind == "batv" and found.original == f"{user}@{name}"
    assert envelope_traces(address) == []


@FUZZ
@given(plain_local, token, token, domain, local_part, domain)
def test_exchange_srs(user: str, hash_: str, stamp: str, orig_domain: str, orig_local: str, name: str) -> None:
    ran("exchange-srs")
    found = parse_exchange_srs(f"{user}+SRS={hash_}={stamp}={orig_domain}={orig_local}@{name}")
    assert found is not None
    assert found.forwarder == (name if user.lower() == "bounces" else f"{user}@{name}")
    assert found.original == f"{orig_local}@{orig_domain}"


header_names = st.one_of(
    st.sampled_from(
        [
            "From",
            "To",
            "Received",
            "Delivered-To",
            "X-Forwarded-For",
            "X-Forwarded-To",
            "Message-ID",
            "X-Sieve-Redirected-From",
            "X-Zimbra-Forwarded",
            "X-MS-Exchange-Inbox-Rules-Loop",
            "In-Reply-To",
            "X-MS-Exchange-Organization-AutoForwarded",
            "Auto-Submitted",
            "List-Id",
            "Precedence",
            "Content-Type",
            "Resent-From",
            "ARC-Seal",
            "Subject",
            "content-type",
            "FROM",
        ]
    ),
    wire_text,
)
header_values = st.one_of(
    wire_text,
    st.builds(lambda u, d, t: f"{t} <{u}@{d}> {t}", local_part, domain, wire_text),
    st.builds(lambda u, d: f"from x by y with ESMTP id 1 for <{u}@{d}>; Mon, 1 Jan 2024", local_part, domain),
    st.sampled_from(["true", "auto-generated", "auto-replied (vacation)", "multipart/report; x", "list", "<a@b>"]),
)
headers_strategy = st.lists(st.tuples(header_names, header_values), max_size=12)
mail_from_strategy = st.one_of(
    wire_text,
    st.builds(lambda u, d: f"{u}@{d}", local_part, domain),
    st.builds(lambda h, d, u, f: f"SRS0={h}=AB={d}={u}@{f}", token, domain, local_part, domain),
    st.builds(lambda u, d, f: f"{u}+caf_={d}={u}@{f}", plain_local, domain, domain),
    st.builds(lambda t, u, d: f"prvs={t}={u}@{d}", token, plain_local, domain),
    st.just(""),
)


@FUZZ
@given(headers_strategy, mail_from_strategy, st.lists(wire_text, max_size=3), st.booleans())
def test_header_traces_never_raise(
    headers: list[tuple[str, str]], mail_from: str, rcpts: list[str], trusted: bool
) -> None:
    ran("header-traces")
    traces = header_traces(headers, mail_from, trusted) + envelope_traces(mail_from)
    traces += delivered_to_traces(headers, rcpts) + received_for_traces(headers, rcpts) + weak_traces(headers)
    for trace in traces:
        assert trace.name and isinstance(trace.forwarder, str)
    assert exemption(mail_from, headers) in ("", "null-sender", "dsn", "auto-reply", "mailing-list")
    assert isinstance(auto_submitted(headers), str)
    mid = message_id(headers)
    assert len(mid) <= max((len(v) for _, v in headers), default=0)
    header_from(headers)
    same_mailbox(mail_from, rcpts[0] if rcpts else "")


# ---- link domains, client addresses and HTML (the spam checks' parsing) ---------------------------

link_texts = st.lists(
    st.one_of(
        wire_text,
        st.builds(lambda scheme, host, rest: f"{scheme}{host}{rest}",
                  st.sampled_from(["http://", "https://", "HTTP://", "www.", "hxxp://", "", "<a href=\"http://"]),
                  st.one_of(domain, wire_text, st.sampled_from(["bắcninh.vn", "xn--", "1.2.3.4", "[::1]", "a..b",
                                                                "example.com.", "x" * 300 + ".com"])),
                  st.one_of(st.sampled_from(["/", ":80/x", "?q=1", "&amp;", "\">", ""]), wire_text)),
    ),
    max_size=6,
).map(" ".join)  # fmt: skip


@FUZZ
@given(link_texts, st.one_of(st.sampled_from(["127.0.0.2", "::1", "IPv6:2001:db8::2", "[10.0.0.1]",
                                               "::ffff:1.2.3.4", "fe80::1%eth0"]), wire_text))  # fmt: skip
def test_link_domains_and_addresses_never_raise(text: str, client: str) -> None:
    ran("links")
    names = link_domains([text, f"<p>{text}</p>"], ["bacninh.gov.vn"], 20)
    assert len(names) <= 20
    for name in names:
        assert name.isascii() and "." in name and not is_under(name, "bacninh.gov.vn")
    reversed_ip(client)
    html_to_text(text)
    strip_diacritics(normalize(text))


link_starts = st.lists(
    st.one_of(
        st.sampled_from(["http://", "https://", "HtTpS://", "ftp://", "www.", "WWW.", "wwww.", "xhttp://", "http",
                         "://", "_www.", "1www.", "é.www.", "httpſ://", "İ", "a@", "http://u@", "http://www.", " "]),
        st.text(alphabet="ab.:/ wW@-_", max_size=8),
        wire_text,
    ),
    max_size=10,
).map("".join)  # fmt: skip


@FUZZ
@given(link_starts)
def test_link_hosts_found_from_anchors_equal_the_pattern_run_everywhere(text: str) -> None:
    ran("link-anchors")
    expected = [(m.start(), m.end(), m.group(1)) for m in links.URL_HOST.finditer(text)]
    assert [(m.start(), m.end(), m.group(1)) for m in links.url_hosts(text)] == expected


def test_a_scoped_ipv6_client_address() -> None:
    # pymilter hands over addresses without a scope; `govmilter scan --client-ip` does not: the zone
    # index names a local interface, not part of the address, and is dropped
    nibbles = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.e.f"
    assert reversed_ip("fe80::1%eth0") == reversed_ip("fe80::1") == nibbles
    assert reversed_ip("IPv6:fe80::1%2") == reversed_ip("[fe80::1%2]") == nibbles


# ---- decoders and zip directories ------------------------------------------------------------

uu_texts = st.lists(
    st.one_of(
        st.sampled_from([b"begin 644 a.txt", b"begin-base64 644 b.bin", b"begin 0755  c d ", b"begin 64 x", b"\n",
                         b"\r\n", b"xbegin 644 z", b" begin 644 y", b"begin", b"begin 644 \r", b"begin 7777 e\t\r"]),
        st.binary(max_size=12),
    ),
    max_size=10,
).map(b"".join)  # fmt: skip


@FUZZ
@given(uu_texts, st.integers(0, 200), st.integers(0, 200))
def test_uu_begin_found_from_the_literal_equals_the_pattern_searched(text: bytes, pos: int, end: int) -> None:
    ran("uu-begin")
    pos, end = min(pos, len(text)), min(end, len(text))
    expected = decoders._UU_BEGIN.search(text, pos, end)
    found = decoders.find_uu_begin(text, pos, end)
    assert (found and (found.span(), found.group(1))) == (expected and (expected.span(), expected.group(1)))


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@FUZZ
@given(
    st.binary(max_size=800),
    st.lists(st.integers(min_value=0, max_value=1000), max_size=10),
    st.sampled_from(["base64", "quoted-printable", "7bit", "binary", "x-uuencode", "", "BASE64"]),
)
def test_decoders_take_any_bytes_in_any_pieces(data: bytes, cuts: list[int], encoding: str) -> None:
    ran("decoders")
    whole = make_decoder(encoding)
    expected = whole.feed(data) + whole.finish()
    split = make_decoder(encoding)
    got = b"".join(split.feed(p) for p in _pieces(data, cuts)) + split.finish()
    assert got == expected
    assert split.defects == whole.defects
    if encoding == "base64":
        assert len(expected) <= len(data) * 3 // 4 + 3


@FUZZ
@given(
    st.lists(
        st.sampled_from([b"=", b"\r", b"\n", b"A", b"3D", b"=\r\n", b"=\r\r\n", b"==", b"=4", b"_", b" "]), max_size=80
    ).map(b"".join),
    st.lists(st.integers(min_value=0, max_value=400), max_size=10),
)
def test_broken_quoted_printable_in_any_pieces(data: bytes, cuts: list[int]) -> None:
    ran("qp-broken")
    whole = QuotedPrintableDecoder()
    expected = whole.feed(data) + whole.finish()
    split = QuotedPrintableDecoder()
    assert b"".join(split.feed(p) for p in _pieces(data, cuts)) + split.finish() == expected


@FUZZ
@given(st.binary(max_size=600), st.lists(st.integers(min_value=0, max_value=900), max_size=8))
def test_base64_and_qp_round_trip_in_pieces(data: bytes, cuts: list[int]) -> None:
    ran("round-trip")
    for decoder, encoded in (
        (Base64Decoder(), base64.encodebytes(data).replace(b"\n", b"\r\n")),
        (QuotedPrintableDecoder(), qp(data)),
    ):
        assert b"".join(decoder.feed(p) for p in _pieces(encoded, cuts)) + decoder.finish() == data


class _Sink:
    def __init__(self, name: str, out: list[tuple[str, bytearray]]):
        self.data = bytearray()
        out.append((name, self.data))

    def take(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        pass


@FUZZ
@given(
    st.lists(
        st.tuples(st.text(alphabet=LETTERS + "._-", min_size=1, max_size=12), st.binary(max_size=300)), max_size=3
    ),
    st.binary(max_size=200),
    st.lists(st.integers(min_value=0, max_value=3000), max_size=8),
)
def test_uuencode_blocks_are_found_in_any_pieces(files: list[tuple[str, bytes]], junk: bytes, cuts: list[int]) -> None:
    ran("uuencode")
    text = bytearray(b"Xin chao\r\n")
    for name, content in files:
        text += f"begin 644 {name}\r\n".encode()
        for i in range(0, len(content), 45):
            text += binascii.b2a_uu(content[i : i + 45]).replace(b"\n", b"\r\n")
        text += b"`\r\nend\r\n"
    text += junk
    found: list[tuple[str, bytearray]] = []
    scanner = UUScanner(lambda name: _Sink(name, found))
    for piece in _pieces(bytes(text), cuts):
        scanner.feed(piece)
    scanner.finish()
    assert [(n, bytes(d)) for n, d in found[: len(files)]] == [(n, c) for n, c in files]


zip_names = st.lists(st.text(alphabet=LETTERS + "0123456789._- ắếữ/", min_size=1, max_size=20), max_size=6, unique=True)


def make_zip(names: list[str], comment: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, name.encode() * 3)
        archive.comment = comment
    return buffer.getvalue()


@FUZZ
@given(
    zip_names.filter(lambda ns: not any(n.endswith("/") or n.startswith("/") for n in ns)),
    st.binary(max_size=40).filter(lambda c: b"PK" not in c),  # a fake end record in the comment fools zipfile too
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=6),
)
def test_zip_directory_of_real_and_damaged_archives(
    names: list[str], comment: bytes, flips: list[tuple[int, int]]
) -> None:
    ran("zip")
    data = make_zip(names, comment)
    listing = read_directory(data, len(data), 1000)
    assert listing.problem == "" and not listing.encrypted
    assert list(listing.names) == [info.filename for info in zipfile.ZipFile(io.BytesIO(data)).infolist()]
    damaged = bytearray(data)
    for position, value in flips:
        damaged[position % len(damaged)] = value
    for tail in (bytes(damaged), bytes(damaged[-64:]), bytes(damaged[: len(damaged) // 2])):
        broken = read_directory(tail, len(damaged), 3)
        assert len(broken.names) <= 3 and all(len(n) <= 255 for n in broken.names)
    looks_like_zip(bytes(damaged))
    local_header_encrypted(bytes(damaged))


@FUZZ
@given(st.binary(max_size=400), st.integers(min_value=0, max_value=1 << 40))
def test_zip_directory_of_random_bytes(tail: bytes, total: int) -> None:
    ran("zip-random")
    for data in (
        tail,
        tail + b"PK\x05\x06" + tail[:18],
        b"PK\x01\x02" + tail + b"PK\x06\x07" + tail[:16] + b"PK\x05\x06" + bytes(18),
    ):
        listing = read_directory(data, max(total, len(data)), 5)
        assert len(listing.names) <= 5


# ---- MIME header fields -------------------------------------------------------------------------

charset_labels = st.one_of(
    st.sampled_from(["utf-8", "UTF-8", "iso-8859-1", "windows-1258", "x-unknown", "base64", "rot13", "", "utf-8*vi"]),
    st.binary(max_size=12).map(lambda b: b.decode("latin-1")),
    wire_text,
)
encoded_words = st.builds(
    lambda label, kind, payload: f"=?{label}?{kind}?{payload}?=",
    charset_labels,
    st.sampled_from(["B", "Q", "b", "q", "X", ""]),
    st.one_of(st.sampled_from(["MA==", "w6E=", "=C3=A1", "_", "????", ""]), wire_text),
)
param_values = st.one_of(
    wire_text,
    encoded_words,
    encoded_words.map(lambda w: f'"{w}"'),
    st.builds(lambda label, text: f"{label}''{quote(text, safe='')}", charset_labels, st.text(max_size=20)),
)


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Content-Type", "Content-Disposition", "content-type", "Content-Transfer-Encoding"]),
            st.sampled_from(["multipart/mixed", "text/plain", "attachment", "inline", "base64", "", "a/b/c", "\x00"]),
            st.lists(
                st.tuples(st.sampled_from(["name", "filename", "filename*", "filename*0*", "filename*1", "boundary",
                                           "charset", "name*0", "x"]), param_values),
                max_size=4,
            ),
        ),
        max_size=4,
    ),
    st.sampled_from([b"\r\n", b"\n", b"\r\n\t"]),
)  # fmt: skip
def test_entity_header_fields_never_raise(fields: list[tuple[str, str, list[tuple[str, str]]]], fold: bytes) -> None:
    ran("mime-headers")
    lines = []
    for name, value, params in fields:
        text = value + "".join(f"; {key}={param}" for key, param in params)
        lines.append(f"{name}: {text}".encode("utf-8", "surrogateescape").replace(b"; ", b";" + fold, 1))
    block = b"\r\n".join(lines) + b"\r\n"
    headers = parse_entity(block)
    assert headers.content_type == headers.content_type.lower() and "/" in headers.content_type
    assert isinstance(headers.filename, str) and isinstance(headers.boundary, str)
    walk(iter([b"MIME-Version: 1.0\r\n" + block + b"\r\n--x\r\nbody\r\n"]))


def test_a_non_ascii_charset_label_in_an_encoded_file_name() -> None:
    """email.header raises CharsetError, not ValueError, for "=?\xffutf-8?B?...?=" (found by this file)."""
    block = b'Content-Type: application/pdf; name="=?\xffutf-8?B?MA==?="\r\n'
    assert parse_entity(block).filename == "=?\ufffdutf-8?B?MA==?="
    facts = walk(iter([b"MIME-Version: 1.0\r\n" + block + b"\r\nJVBERi0=\r\n"]))
    assert len(facts.parts) == 1 and facts.parts[0].is_attachment


def test_a_non_ascii_charset_label_in_the_subject(harness: Harness) -> None:
    message = b"From: a@example.com\r\nTo: user@bacninh.gov.vn\r\nSubject: =?\xffutf-8?B?MA==?=\r\n\r\nhi\r\n"
    before = internal_errors(harness)
    result = harness.scan(message, client_ip="127.0.0.5")
    assert_defined(harness, before, result.verdict.action, result.verdict)


# ---- MIME trees ---------------------------------------------------------------------------------

TEXT_CHARS = LETTERS + " .,!?'\u00e0\u00e1\u1ea1\u1eaf\u1ebf\u1eef\u0111\u01b0\u01a1\u00ea\u00f4\u00c2\u0110\u1ec7"
NAME_CHARS = LETTERS + "0123456789 ._-()\u1eaf\u1ebf\u1eef\u0111\u01b0\u01a1"
BCHARS = LETTERS + "0123456789'()+_,./:?"  # RFC 2046 bchars, minus '-', '=' and space (see the oracle note)
CHARSETS = [
    ("utf-8", "utf-8"),
    ("UTF-8", "utf-8"),
    ("iso-8859-1", "latin-1"),
    ("windows-1252", "cp1252"),
    ("utf-16", "utf-16"),
    ("x-unknown-charset", "utf-8"),
    ("base64", "utf-8"),
    ("", "utf-8"),
]
BINARY_TYPES = ["application/pdf", "application/octet-stream", "image/png", "APPLICATION/VND.MS-EXCEL", "audio/x-wav"]


@dataclass
class Leaf:
    content_type: str
    data: bytes
    encoding: str
    filename: str
    name_style: str
    disposition: str
    charset: str = ""
    text: str | None = None  # the decoded text a reader sees, for text leaves
    archive: tuple[str, ...] = ()
    explicit_type: bool = True

    @property
    def is_attachment(self) -> bool:
        """Not body text (an attached message's leaves count too: Expected.attached)."""
        kind = self.content_type.lower()
        named = bool(self.filename) or self.disposition.lower() == "attachment"
        return named or kind not in ("text/plain", "text/html")

    @property
    def body_text(self) -> bool:
        return self.content_type.lower() in ("text/plain", "text/html") and self.disposition.lower() != "attachment"

    @property
    def keeps_text(self) -> bool:
        """Body text, or an attached web page (HTML or SVG by type or name), which is read as HTML too."""
        page = self.content_type.lower() in ("text/html", "application/xhtml+xml", "image/svg+xml") or (
            self.filename.lower().rstrip(". ").endswith((".htm", ".html", ".shtml", ".xhtml", ".svg")))  # fmt: skip
        return self.body_text or page

    @property
    def kept_text(self) -> str:
        """The text the walk keeps of it. An attached page is read as a browser reads it: a byte-order
        mark first, else its charset (a page that is not a text leaf: UTF-8)."""
        if not self.body_text:
            if self.data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                return self.data.decode("utf-16", "replace")
            if self.data.startswith(codecs.BOM_UTF8):
                return self.data.decode("utf-8-sig", "replace")
        return self.text if self.text is not None else self.data.decode("utf-8", "replace")


@dataclass
class Multi:
    subtype: str
    boundary: str
    children: list[Node]
    preamble: str = ""
    epilogue: str = ""


@dataclass
class Wrapped:
    """A message/rfc822 part around another entity."""

    inner: Node


Node = Leaf | Multi | Wrapped


@st.composite
def filenames(draw: st.DrawFn) -> tuple[str, str]:
    if draw(st.booleans()):
        return "", ""
    name = draw(st.text(alphabet=NAME_CHARS, min_size=1, max_size=40).map(str.strip).filter(bool))
    styles = ["2231", "2231-continued", "encoded-word", "content-type-name"]
    if name.isascii():
        styles.append("quoted")
    return name, draw(st.sampled_from(styles))


@st.composite
def leaves(draw: st.DrawFn) -> Leaf:
    filename, style = draw(filenames())
    disposition = draw(st.sampled_from(["", "inline", "attachment", "ATTACHMENT"]))
    kind = draw(st.sampled_from(["text", "text", "binary", "zip"]))
    if kind == "text":
        content_type = draw(st.sampled_from(["text/plain", "text/html", "TEXT/PLAIN", "text/csv"]))
        lines = draw(st.lists(st.text(alphabet=TEXT_CHARS, max_size=50), max_size=6))
        text = "\r\n".join(lines)
        label, codec = draw(st.sampled_from(CHARSETS))
        try:
            data = text.encode(codec)
        except UnicodeEncodeError:
            label, codec = "utf-8", "utf-8"
            data = text.encode(codec)
        encodings = ["base64", "quoted-printable", "Quoted-Printable"]
        if data.isascii():
            encodings += ["7bit", "", "8bit"]
        encoding = draw(st.sampled_from(encodings))
        return Leaf(
            content_type,
            data,
            encoding,
            filename,
            style,
            disposition,
            label,
            text,
            explicit_type=content_type != "text/plain" or draw(st.booleans()),
        )
    if kind == "zip":
        names = draw(zip_names.filter(lambda ns: not any(n.endswith("/") for n in ns)))
        data = make_zip(names)
        return Leaf(
            "application/zip",
            data,
            draw(st.sampled_from(["base64", "quoted-printable"])),
            filename,
            style,
            disposition,
            archive=tuple(zipfile.ZipFile(io.BytesIO(data)).namelist()),
        )
    data = draw(st.binary(max_size=1500))
    encoding = draw(st.sampled_from(["base64", "quoted-printable", "binary", "BASE64"]))
    assume(not looks_like_zip(data))  # a broken zip is a defect, tested below
    if encoding == "binary":
        assume(b"--=_" not in data)
    return Leaf(draw(st.sampled_from(BINARY_TYPES)), data, encoding, filename, style, disposition)


boundaries = st.text(alphabet=BCHARS, min_size=1, max_size=60).map(lambda s: "=_" + s)


def trees(max_leaves: int = 8) -> st.SearchStrategy[Node]:
    def extend(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
        multi = st.builds(
            Multi,
            st.sampled_from(["mixed", "alternative", "related", "MIXED", "signed", "digest"]),
            boundaries,
            st.lists(children, min_size=1, max_size=4),
            st.text(alphabet=TEXT_CHARS, max_size=40),
            st.text(alphabet=TEXT_CHARS, max_size=40),
        )
        return st.one_of(multi, st.builds(Wrapped, children))

    return st.recursive(leaves(), extend, max_leaves=max_leaves)


TREES = trees()


@dataclass
class Expected:
    leaves: list[Leaf] = field(default_factory=list)
    boundaries: list[str] = field(default_factory=list)
    attached: list[bool] = field(default_factory=list)  # per leaf: inside an attached message
    header_bytes: int = 0  # header blocks inside attached messages: they count toward the cap

    def counts(self, index: int) -> bool:
        return self.leaves[index].is_attachment or self.attached[index]


def _param_lines(name: str, style: str, param: str) -> str:
    if style == "quoted":
        return f'; {param}="{name}"'
    if style == "2231":
        return f"; {param}*=utf-8''{quote(name, safe='')}"
    if style == "2231-continued":
        encoded = quote(name, safe="")
        # cut between %XX escapes only: each section is %-decoded on its own
        cut = len(encoded) // 2
        while cut > 0 and "%" in encoded[max(0, cut - 2) : cut]:
            cut -= 1
        first, second = encoded[:cut], encoded[cut:]
        return f"; {param}*0*=utf-8''{first};\r\n\t{param}*1*={second}" if first else f"; {param}*=utf-8''{second}"
    b64name = base64.b64encode(name.encode()).decode()
    return f'; {param}="=?UTF-8?B?{b64name}?="'


def qp(data: bytes) -> bytes:
    """Binary-safe quoted-printable with CRLF soft breaks (b2a_qp writes CRLF itself when the data has one)."""
    encoded = binascii.b2a_qp(data, quotetabs=True, istext=False)
    return encoded.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _encode(leaf: Leaf) -> bytes:
    encoding = leaf.encoding.lower()
    if encoding == "base64":
        return base64.encodebytes(leaf.data).replace(b"\n", b"\r\n")
    if encoding == "quoted-printable":
        return qp(leaf.data)
    return leaf.data


def serialize(
    node: Node, expected: Expected, in_digest: bool = False, attached: bool = False, top: bool = True
) -> tuple[bytes, bytes]:
    """(MIME header lines, body) of one entity, CRLF line ends; records the leaves in order."""
    if isinstance(node, Leaf):
        expected.leaves.append(node)
        expected.attached.append(attached)
        head = ""
        if node.explicit_type or in_digest or node.charset:
            head += f"Content-Type: {node.content_type}"
            if node.charset:
                head += f'; charset="{node.charset}"'
            if node.filename and node.name_style == "content-type-name":
                head += _param_lines(node.filename, "2231", "name")
            head += "\r\n"
        elif node.filename and node.name_style == "content-type-name":
            head += f"Content-Type: text/plain{_param_lines(node.filename, '2231', 'name')}\r\n"
        if node.encoding:
            head += f"Content-Transfer-Encoding: {node.encoding}\r\n"
        if node.disposition or (node.filename and node.name_style != "content-type-name"):
            head += f"Content-Disposition: {node.disposition or 'inline'}"
            if node.filename and node.name_style != "content-type-name":
                head += _param_lines(node.filename, node.name_style, "filename")
            head += "\r\n"
        return head.encode(), _encode(node)
    if isinstance(node, Wrapped):
        inner_attached = attached or not top  # every message/rfc822 but a top-level one is attached
        inner_head, inner_body = serialize(node.inner, expected, attached=inner_attached, top=False)
        header = b"Subject: inner\r\nMIME-Version: 1.0\r\n" + inner_head
        if inner_attached:
            expected.header_bytes += len(header)
        body = header + b"\r\n" + inner_body
        return b"Content-Type: message/rfc822\r\n", body
    assume(node.boundary not in expected.boundaries)
    expected.boundaries.append(node.boundary)
    parts = bytearray()
    if node.preamble:
        parts += node.preamble.encode() + b"\r\n"
    for child in node.children:
        child_head, child_body = serialize(child, expected, node.subtype == "digest", attached, top=False)
        if attached:
            expected.header_bytes += len(child_head)
        parts += f"--{node.boundary}\r\n".encode() + child_head + b"\r\n" + child_body + b"\r\n"
    parts += f"--{node.boundary}--\r\n".encode()
    if node.epilogue:
        parts += node.epilogue.encode() + b"\r\n"
    return f'Content-Type: multipart/{node.subtype};\r\n\tboundary="{node.boundary}"\r\n'.encode(), bytes(parts)


TOP = b"From: Nguoi gui <sender@example.com>\r\nTo: user@bacninh.gov.vn\r\nSubject: fuzz\r\nMIME-Version: 1.0\r\n"


def message_of(node: Node) -> tuple[bytes, Expected]:
    expected = Expected()
    head, body = serialize(node, expected)
    return TOP + head + b"\r\n" + body, expected


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def check_bounds(facts: MessageFacts, limits: Limits) -> None:
    """The samples the walk keeps never outgrow their limits, whatever the input."""
    assert len(facts.parts) <= limits.max_parts
    assert len(facts.defects) <= limits.max_defects
    # all text is kept; what stays in memory is bounded (the rest is in the spill file)
    assert facts.store is None or facts.store.memory_left >= 0
    assert sum(len(piece) for t in facts.texts for piece in t._memory) <= limits.text_memory
    for part in facts.parts:
        assert len(part.head) <= max(limits.head_bytes, limits.small_head)
        assert len(part.archive_names) <= limits.archive_names
        # read from one header block; decode_header may spell raw 8-bit text as \uXXXX escapes
        assert len(part.filename) <= 6 * limits.max_header
        assert part.decoded_size >= 0
    assert facts.attachment_bytes >= 0


@FUZZ
@given(TREES, st.integers(min_value=1, max_value=3000))
def test_generated_trees_are_walked_exactly(tree: Node, size: int) -> None:
    ran("mime-trees")
    data, expected = message_of(tree)
    facts = walk(chunks(data, 1 << 20))
    assert walk(chunks(data, size)) == facts  # any chunking gives the same facts
    check_bounds(facts, Limits())
    assert set(facts.defects) <= {"unknown-charset"}, facts.defects
    assert len(facts.parts) == len(expected.leaves)
    for index, (part, leaf) in enumerate(zip(facts.parts, expected.leaves, strict=True)):
        assert part.content_type == leaf.content_type.lower()
        assert part.filename == leaf.filename
        assert part.is_attachment == expected.counts(index)
        assert part.decoded_size == len(leaf.data)
        assert part.head == leaf.data[: len(part.head)]
        if leaf.archive and part.is_attachment:
            assert part.archive_names == leaf.archive
    counted = sum(len(leaf.data) for i, leaf in enumerate(expected.leaves) if expected.counts(i))
    assert facts.attachment_bytes == counted + expected.header_bytes
    texts = [leaf.kept_text for leaf in expected.leaves if leaf.keeps_text and leaf.kept_text]
    assert [t.text for t in facts.texts] == texts


SMALL = Limits(
    max_parts=4,
    max_depth=3,
    max_header=600,
    head_bytes=64,
    head_budget=200,
    small_head=16,
    zip_tail=512,
    text_memory=120,
    archive_names=2,
    max_defects=5,
)


@st.composite
def mangled(draw: st.DrawFn) -> bytes:
    """A generated message, then broken the ways mail in the wild and attackers break it."""
    data = bytearray(message_of(draw(TREES))[0])
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        how = draw(
            st.sampled_from(["truncate", "nul", "long-line", "bare-lf", "bare-cr", "insert", "delete", "duplicate"])
        )
        at = draw(st.integers(min_value=0, max_value=max(0, len(data))))
        if how == "truncate":
            del data[at:]
        elif how == "nul":
            data[at:at] = b"\x00" * draw(st.integers(1, 50))
        elif how == "long-line":
            data[at:at] = draw(st.sampled_from([b"A", b"-", b"=", b"\t", b"\xff"])) * draw(st.integers(1, 40000))
        elif how == "bare-lf":
            data = bytearray(bytes(data).replace(b"\r\n", b"\n"))
        elif how == "bare-cr":
            data = bytearray(bytes(data).replace(b"\r\n", b"\r"))
        elif how == "insert":
            data[at:at] = draw(
                st.sampled_from(
                    [
                        b"\r\n--",
                        b"--=_",
                        b"\r\n\r\n",
                        b"Content-Type: multipart/mixed; boundary=x\r\n",
                        b"\r\n--x\r\n",
                        b"=\r\n",
                        b"begin 644 a.exe\r\n",
                        b"PK\x03\x04",
                        b"PK\x05\x06",
                        b"=?utf-8?q?=FF?=",
                    ]
                )
            )
        elif how == "delete":
            del data[at : at + draw(st.integers(1, 200))]
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 400))]
    return bytes(data)


@FUZZ
@given(mangled(), st.integers(min_value=1, max_value=5000))
def test_mangled_messages_are_walked_within_limits(data: bytes, size: int) -> None:
    ran("mime-mangled")
    for limits in (SMALL, Limits()):
        facts = walk(chunks(data, size), limits)
        check_bounds(facts, limits)


@FUZZ
@given(st.binary(max_size=4000), st.integers(min_value=1, max_value=700))
def test_random_bytes_are_walked_within_limits(data: bytes, size: int) -> None:
    ran("mime-random")
    facts = walk(chunks(data, size), SMALL)
    check_bounds(facts, SMALL)


# ---- the whole pipeline --------------------------------------------------------------------------

ACTIONS = {Action.ACCEPT, Action.REJECT, Action.TEMPFAIL, Action.DISCARD}


@pytest.fixture(scope="module")
def harness() -> Harness:
    return Harness(skip=["antivirus", "dnsbl"])


envelopes = st.fixed_dictionaries(
    {
        "mail_from": mail_from_strategy,
        "rcpts": st.lists(
            st.one_of(
                st.sampled_from(
                    ["user@bacninh.gov.vn", "vanthu@hanoi.gov.vn", "partner@example.com", "x@backan.edu.vn"]
                ),
                wire_text,
            ),
            min_size=1,
            max_size=3,
        ),
        "client_ip": st.sampled_from(
            [
                "127.0.0.1",
                "10.9.8.7",
                "127.0.0.2",
                "203.0.113.9",
                "::1",
                "2001:db8::2",
                "not-an-ip",
                "",
                "127.0.0.1\r\n",
            ]
        ),
        "auth_user": st.one_of(st.just(""), wire_text),
        "mail_params": st.one_of(
            st.just({}),
            st.fixed_dictionaries(
                {
                    "SIZE": st.one_of(
                        st.integers(0, 10**9).map(str),
                        wire_text,
                        st.sampled_from(["\u00b2", "\u0663", "١٢", "-1", "1e9"]),
                    )
                }
            ),
        ),
    }
)


def internal_errors(harness: Harness) -> float:
    return internal_errors_of(harness.metrics)


def internal_errors_of(metrics: Metrics) -> float:
    return sum(
        sample.value
        for metric in metrics.registry.collect()
        if metric.name == "govmilter_internal_errors"
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


def assert_defined(harness: Harness, errors_before: float, result_action: Action, verdict: Verdict) -> None:
    assert result_action in ACTIONS
    # with clamd and DNS left out, nothing may fail temporarily: a tempfail is our own bug
    assert result_action is not Action.TEMPFAIL, verdict
    if result_action is Action.REJECT:
        assert verdict.code.startswith("5") and verdict.text.isascii() and "%" not in verdict.text
    assert internal_errors(harness) == errors_before


@FUZZ
@given(TREES, envelopes)
def test_pipeline_on_generated_messages(harness: Harness, tree: Node, envelope: dict[str, object]) -> None:
    ran("pipeline-trees")
    data, _ = message_of(tree)
    before = internal_errors(harness)
    result = harness.scan(data, **envelope)  # type: ignore[arg-type]
    assert_defined(harness, before, result.verdict.action, result.verdict)


@FUZZ
@given(mangled(), envelopes)
def test_pipeline_on_mangled_messages(harness: Harness, data: bytes, envelope: dict[str, object]) -> None:
    ran("pipeline-mangled")
    before = internal_errors(harness)
    result = harness.scan(data, **envelope)  # type: ignore[arg-type]
    assert_defined(harness, before, result.verdict.action, result.verdict)


@st.composite
def random_messages(draw: st.DrawFn) -> bytes:
    """Random header fields (any bytes, folded or not, NULs) over a random body."""
    fields = draw(headers_strategy)
    head = bytearray()
    for name, value in fields:
        fold = draw(st.sampled_from([b"\r\n", b"\r\n\t", b"\n ", b"\r\n "]))
        head += (
            name.encode("utf-8", "surrogateescape")
            + b":"
            + fold.join(part.encode("utf-8", "surrogateescape") for part in value.split(" ", 2))
            + b"\r\n"
        )
    body = draw(st.one_of(st.binary(max_size=2000), mangled()))
    return bytes(head) + draw(st.sampled_from([b"\r\n", b"\n", b""])) + body


@FUZZ
@given(random_messages(), envelopes)
def test_pipeline_on_random_headers(harness: Harness, data: bytes, envelope: dict[str, object]) -> None:
    ran("pipeline-random")
    before = internal_errors(harness)
    result = harness.scan(data, **envelope)  # type: ignore[arg-type]
    assert_defined(harness, before, result.verdict.action, result.verdict)


# ---- the adapter: the callbacks as libmilter drives them ----------------------------------------

NO_REPLY_BITS = (
    Milter.P_NR_CONN | Milter.P_NR_HELO | Milter.P_NR_MAIL | Milter.P_NR_RCPT | Milter.P_NR_DATA
    | Milter.P_NR_UNKN | Milter.P_NR_EOH | Milter.P_NR_BODY | Milter.P_NR_HDR
)  # fmt: skip


@pytest.fixture(scope="module")
def milter_runtime() -> Iterator[Runtime]:
    # pymilter's test context closes on NOREPLY: play an MTA that offers no no-reply steps
    saved_opts, saved_factory = PymilterTestCtx.default_opts, Milter.factory
    PymilterTestCtx.default_opts = [Milter.CURR_ACTS, 0x1FFFFF & ~NO_REPLY_BITS, 0, 0]
    # rules.last_good_dir="": no copy kept, never in the host's /var/lib/govmilter
    config = load_config(None, [f'rules.dir="{RULES}"', 'metrics.listen=""', 'rules.last_good_dir=""'])
    runtime = Runtime(config, skip=["antivirus", "dnsbl"])
    Milter.factory = functools.partial(GovMilter, runtime)
    yield runtime
    PymilterTestCtx.default_opts, Milter.factory = saved_opts, saved_factory


esmtp_params = st.lists(
    st.one_of(
        st.builds(lambda v: f"SIZE={v}", st.one_of(st.integers(0, 10**12).map(str), wire_text)),
        st.sampled_from(["BODY=8BITMIME", "SMTPUTF8", "RET=HDRS", "ENVID=x", "SIZE", "=", "size=1"]),
        wire_text,
    ),
    max_size=3,
)


# the fields only this gateway may set, in any case, among the others: removed from accepted mail
own_header_names = st.sampled_from(["X-Spam-Flag", "x-spam-status", "X-Virus-Scanned", "X-GOVMILTER", "X-Virus-Status",
                                    "X-Spammy", "X-Virus"])  # fmt: skip


@FUZZ
@given(envelopes, esmtp_params, wire_text,
       st.lists(st.tuples(st.one_of(header_names, own_header_names), header_values), max_size=10),
       st.one_of(TREES.map(lambda t: message_of(t)[0]), mangled(), st.binary(max_size=3000)),
       st.integers(min_value=1, max_value=9000))  # fmt: skip
def test_adapter_answers_every_transaction(
    milter_runtime: Runtime,
    envelope: dict[str, Any],
    params: list[str],
    helo: str,
    headers: list[tuple[str, str]],
    body: bytes,
    chunk: int,
) -> None:
    ran("adapter")
    before = internal_errors_of(milter_runtime.metrics)
    ctx = RecordingCtx()  # takes header changes at end of message, as Postfix does
    ctx._setsymval("i", "FUZZ1")
    ip = envelope["client_ip"] if envelope["client_ip"] in ("127.0.0.1", "10.9.8.7", "::1") else "203.0.113.9"
    assert ctx._connect(helo=helo, ip=ip) == Milter.CONTINUE
    answer = ctx._envfrom(f"<{envelope['mail_from']}>", *params)
    if answer == Milter.CONTINUE:
        for rcpt in envelope["rcpts"]:
            ctx._envrcpt(f"<{rcpt}>")
        for name, value in headers:
            ctx._priv.header(name, value)
        answer = ctx._eoh()
    for start in range(0, len(body), chunk):
        if answer != Milter.CONTINUE:
            break
        answer = ctx._priv.body(body[start : start + chunk])
    if answer == Milter.CONTINUE:
        answer = ctx._eom()
    ctx._close()
    assert answer in (Milter.ACCEPT, Milter.REJECT, Milter.DISCARD), (answer, ctx._reply)
    if answer == Milter.REJECT:
        code, text = ctx._reply[0], ctx._reply[2]
        assert code.startswith("5") and text.isascii() and "%" not in text and "\r" not in text
    for _, value, _ in ctx.added:  # headers we add go back on the wire: printable ASCII lines, folded
        first, *folds = value.split("\n")
        assert all(" " <= c <= "~" for line in (first, *(fold[1:] for fold in folds)) for c in line), value
        assert all(fold[:1] in (" ", "\t") and fold.strip() for fold in folds), value
    if answer == Milter.ACCEPT:  # every forged field of ours removed, by occurrence, the last first
        counts: Counter[str] = Counter()
        forged = []
        for name, _ in headers:
            counts[name.lower()] += 1
            if name.lower().startswith(("x-govmilter", "x-spam-", "x-virus-scanned", "x-virus-status")):
                forged.append((name, counts[name.lower()], ""))
        assert ctx.changed == forged[::-1]
    else:
        assert ctx.changed == ctx.added == []
    assert internal_errors_of(milter_runtime.metrics) == before
