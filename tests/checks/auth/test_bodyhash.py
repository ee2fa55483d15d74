"""The streamed body hash against dkimpy's own, on generated messages cut into chunks anywhere.

dkimpy is the reference: its rfc822_parse splits the message, its canonicalization
classes canonicalize the whole body, and its l= cuts the canonical body. The streamed
hash must be the same octets whatever the chunking: a CRLF, a run of white space or
the empty lines at the end split over two chunks, a lone CR, a bare LF.
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import dkim
import pytest
from dkim.canonicalization import Relaxed, Simple
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from govmilter.checks.auth import bodyhash
from govmilter.checks.auth import dkim as dkim_mod
from govmilter.checks.auth.signing import SigningKey, keygen, load_key, public_record, sign
from govmilter.clients.dns import Budget, Records
from govmilter.config import DkimKey

PIECES = [b"a", b"Xin chao", b" ", b"  ", b"\t", b"\r", b"\n", b"\r\n", b"\r\n\r\n", b" \r\n", b"\t\r\n", b"\r\r\n"]
body_strategy = st.lists(st.sampled_from(PIECES), max_size=40).map(b"".join)
CANON = {b"simple": Simple, b"relaxed": Relaxed}
ALGORITHMS = {b"rsa-sha256": hashlib.sha256, b"rsa-sha1": hashlib.sha1, b"ed25519-sha256": hashlib.sha256}


def reference(body: bytes, canon: bytes, algorithm: bytes, limit: int | None) -> bytes:
    """What dkimpy hashes for this body (dkimpy 1.1: DomainSigner.verify_sig_process)."""
    canonical = CANON[canon].canonicalize_body(body)
    if limit is not None:
        canonical = canonical[:limit]
    return ALGORITHMS[algorithm](canonical).digest()


def cut(data: bytes, points: list[int]) -> list[bytes]:
    marks = sorted({p % (len(data) + 1) for p in points})
    edges = [0, *marks, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body_strategy, st.lists(st.integers(0, 400), max_size=8), st.none() | st.integers(0, 60))
def test_the_streamed_body_hash_is_dkimpys(body: bytes, points: list[int], limit: int | None) -> None:
    message = b"From: a@example.com\r\nSubject: x\r\n\r\n" + body
    _, parsed = dkim.rfc822_parse(message)
    keys = [(canon, algorithm, limit) for canon in CANON for algorithm in ALGORITHMS]
    header, chunks = bodyhash.split(cut(message, points))
    assert header == b"From: a@example.com\r\nSubject: x\r\n"
    found = bodyhash.digests(chunks, keys)
    for key in keys:
        assert found[key] == reference(parsed, *key), (key, body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body_strategy, st.lists(st.integers(0, 400), max_size=8))
def test_chunks_vouched_crlf_hash_as_the_look_for_bare_lfs_does(body: bytes, points: list[int]) -> None:
    """A spool's lines all end in CRLF (Transaction.crlf): skipping the look changes nothing."""
    body = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # lone CRs stay, no bare LF
    message = b"From: a@example.com\r\nSubject: x\r\n folded\r\n\r\n" + body
    keys = [(canon, algorithm, None) for canon in CANON for algorithm in ALGORITHMS]
    looked_header, looked = bodyhash.split(cut(message, points))
    vouched_header, vouched = bodyhash.split(cut(message, points), crlf=True)
    assert vouched_header == looked_header
    assert bodyhash.digests(vouched, keys) == bodyhash.digests(looked, keys)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from([b"A: b", b" folded", b"\tfolded", b"From x", b"C:d", b""]), max_size=6),
    st.sampled_from([b"\r\n", b"\n"]),
    body_strategy,
    st.lists(st.integers(0, 200), max_size=6),
)
def test_the_header_block_and_body_split_as_dkimpy_splits_them(
    lines: list[bytes], end: bytes, body: bytes, points: list[int]
) -> None:
    message = end.join(lines) + body
    header, chunks = bodyhash.split(cut(message, points))
    streamed = b"".join(chunks)
    try:
        expected = dkim.rfc822_parse(message)
    except (dkim.MessageFormatError, IndexError) as exc:
        try:
            dkim.rfc822_parse(header + b"\r\n")
        except type(exc):
            return
        raise AssertionError(f"dkimpy refused the whole message but not its header block: {message!r}") from None
    assert dkim.rfc822_parse(header + b"\r\n")[0] == expected[0]
    assert streamed == expected[1]


def test_a_message_without_an_empty_line_has_an_empty_body() -> None:
    for message in (b"A: b\r\nC: d", b"A: b\r\n", b"A: b\n", b""):
        _, chunks = bodyhash.split([message])
        assert b"".join(chunks) == dkim.rfc822_parse(message)[1] == b""


def test_one_pass_feeds_every_length_and_algorithm() -> None:
    body = b"Xin chao  \r\n\r\nnoi dung\t \r\n\r\n\r\n"
    keys = [(b"relaxed", b"rsa-sha256", None), (b"relaxed", b"rsa-sha256", 5), (b"simple", b"rsa-sha1", 0)]
    found = bodyhash.digests(iter([body[:11], body[11:]]), keys)
    assert [found[k] for k in keys] == [reference(body, *k) for k in keys]


def test_an_unknown_algorithm_or_canonicalization_is_left_out() -> None:
    assert bodyhash.digests([b"x"], [(b"relaxed", b"rsa-md5", None), (b"fancy", b"rsa-sha256", None)]) == {}


# ---- signing and verifying with the streamed hash, against dkimpy on the whole message ----

KEYS: dict[str, tuple[SigningKey, bytes]] = {}


def key_of(kind: str, tmp: Path) -> tuple[SigningKey, bytes]:
    """A signing key and its DKIM record (made once per kind)."""
    if kind not in KEYS:
        path = tmp / f"{kind}.pem"
        keygen("alpha.com", kind, kind, str(path))
        KEYS[kind] = (load_key(DkimKey("alpha.com", kind, str(path))), public_record(str(path)).encode())
    return KEYS[kind]


def letter(body: bytes) -> bytes:
    return b"From: Cuc Thue <thue@alpha.com>\r\nTo: a@bacninh.gov.vn\r\nSubject: thu\r\n\r\n" + body


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=body_strategy, points=st.lists(st.integers(0, 300), max_size=5))
def test_a_streamed_signature_verifies_by_dkimpy_on_the_whole_message(
    kind: str, body: bytes, points: list[int], tmp_path: Path
) -> None:
    key, record = key_of(kind, tmp_path)
    raw = letter(body)
    value = sign(cut(raw, points), key)
    whole = dkim.DKIM(raw, signature_algorithm=key.algorithm, linesep=b"\r\n")
    theirs = dkim.util.parse_tag_value(whole.sign(b"x", b"alpha.com", key.pem, canonicalize=(b"relaxed", b"relaxed")))
    assert dkim.util.parse_tag_value(value.encode())[b"bh"] == theirs[b"bh"]
    signed_raw = f"DKIM-Signature: {value}\r\n".encode() + raw
    assert dkim.verify(signed_raw, dnsfunc=lambda name, timeout=5: record, minkey=1024)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=body_strategy,
    extra=st.sampled_from([b"", b"appended\r\n", b" \r\n", b"\r\n\r\n"]),
    canon=st.sampled_from([(b"simple", b"simple"), (b"relaxed", b"relaxed"), (b"relaxed", b"simple")]),
    length=st.booleans(),
    points=st.lists(st.integers(0, 300), max_size=5),
)
def test_the_streamed_verifier_says_what_dkimpy_says(
    body: bytes, extra: bytes, canon: tuple[bytes, bytes], length: bool, points: list[int], tmp_path: Path
) -> None:
    key, record = key_of("ed25519", tmp_path)  # dkimpy's own signer: Ed25519 is fast in pure Python
    raw = letter(body)
    field = dkim.DKIM(raw, signature_algorithm=key.algorithm).sign(
        b"ed25519", b"alpha.com", key.pem, canonicalize=canon, length=length
    )
    received = field + raw + extra  # something appended in transit, or nothing
    expected = dkim.verify(received, dnsfunc=lambda name, timeout=5: record, minkey=1024)
    zone = _Zone(record)
    [result] = dkim_mod.verify_all(cut(received, points), zone, Budget(2), 5)
    # a verified signature whose l= leaves content unsigned is `policy` here, not `pass` (dkim.py)
    assert (result.result in ("pass", "policy")) == expected, (result, received)
    assert result.result != "policy" or length, result


class _Zone:
    """One DKIM key record answered from memory (the real-DNS tests are in test_auth.py)."""

    def __init__(self, record: bytes):
        self.record = record.decode()

    def query(self, name: str, qtype: str, budget: Budget, purpose: str) -> Records:
        return Records("found", (self.record,))
