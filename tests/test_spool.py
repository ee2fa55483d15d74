"""The spool holds the raw message as it came (every header field, then the body); the
transaction stores the first fields for look-ups and counts every one; `govmilter scan`
builds the same spool the same way as the daemon."""

from __future__ import annotations

import io
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from govmilter import decision
from govmilter.config import ConfigError, load_config
from govmilter.model import Envelope, MessageFacts, Transaction
from govmilter.ruleset import RuleSet
from govmilter.spool import CHUNK, Spool, header_block, header_line, iter_message_file, read_message_file
from support.harness import ROOT, RULES, Harness
from support.header_flood import MARKER, filler, message_bytes, multipart_body, multipart_fields
from support.milter_ctx import SERVICE_CHECKS


def spool_of(fields: list[tuple[str, str]], body: bytes, threshold: int = 1 << 20) -> Spool:
    spool = Spool(None, threshold)
    for name, value in fields:
        spool.add_header(name, value)
    spool.end_headers()
    spool.write(body)
    return spool


def test_header_lines_are_written_as_they_stood_on_the_wire() -> None:
    assert header_line("Subject", "a\n\tb") == b"Subject: a\r\n\tb\r\n"  # a fold handed as LF is CRLF again
    assert header_line("X", "caf\udce9") == b"X: caf\xe9\r\n"  # an undecodable byte comes back as it was
    fields = [("From", "a@example.com"), ("Subject", "a\n b"), ("X-Empty", "")]
    spool = spool_of(fields, b"body\r\n")
    assert b"".join(spool.chunks()) == header_block(fields) + b"body\r\n"
    assert b"".join(spool.body_chunks()) == b"body\r\n"
    assert spool.body_offset == len(header_block(fields)) and spool.size == spool.body_offset + 6
    vietnamese = Spool(None, 1024)
    vietnamese.add_header("Subject", "ngày")
    vietnamese.end_headers()
    assert vietnamese.size == vietnamese.body_offset == len("Subject: ngày\r\n\r\n".encode())  # bytes


def test_no_body_and_no_headers() -> None:
    spool = Spool(None, 1024)
    assert b"".join(spool.body_chunks()) == b""  # the headers have not ended: no body yet
    spool.end_headers()
    spool.end_headers()  # once only
    assert b"".join(spool.chunks()) == b"\r\n" and b"".join(spool.body_chunks()) == b""


def test_the_first_body_bytes_end_the_header_block() -> None:
    spool = Spool(None, 1024)
    spool.add_header("Subject", "x")
    spool.write(b"hi")
    assert b"".join(spool.chunks()) == b"Subject: x\r\n\r\nhi"


def test_readers_interleave_with_each_other_and_with_writes() -> None:
    fields = filler(5000)  # more than one CHUNK of header lines: flushed on the way
    spool = spool_of(fields, b"x" * (3 * CHUNK), threshold=4096)
    whole = header_block(fields) + b"x" * (3 * CHUNK)
    one, two = spool.chunks(1000), spool.body_chunks(777)
    first = next(one)
    body_first = next(two)
    spool.write(b"tail")  # a write after a read appends at the end, not where a reader stood
    assert first + b"".join(one) == whole + b"tail"
    assert body_first + b"".join(two) == b"x" * (3 * CHUNK) + b"tail"


def test_a_large_header_block_goes_to_disk_past_the_threshold() -> None:
    spool = Spool(None, 65536)
    for i in range(20000):  # ~600 kB of fields
        spool.add_header(f"X-Filler-{i}", "v" * 10)
        assert spool._pending_chars < CHUNK and len(spool._pending) < 3000  # the in-memory buffer stays small
    assert spool.on_disk
    spool.end_headers()
    assert b"".join(spool.chunks()).count(b"\r\n") == 20001
    spool.close()


def transaction(max_fields: int = 2000, max_bytes: int = 4 << 20) -> Transaction:
    return Transaction(
        envelope=Envelope(),
        ruleset=RuleSet("v1", {}),
        spool=Spool(None, 1 << 20),
        max_header_fields=max_fields,
        max_header_bytes=max_bytes,
    )


def test_the_transaction_counts_every_field_and_stores_the_first() -> None:
    tx = transaction(max_fields=3)
    fields = [("From", "a@example.com"), ("X-Spam-Flag", "NO"), ("Subject", "x"), *filler(10), ("X-SPAM-flag", "no")]
    for name, value in fields:
        tx.add_header(name, value)
    tx.end_headers()
    tx.add_body(b"hi\r\n")
    assert tx.headers == fields[:3] and tx.headers_truncated and tx.header_count == 14
    assert tx.header_bytes == len(header_block(fields)) - 2 and tx.body_bytes == 4
    assert b"".join(tx.raw_chunks()) == message_bytes(fields, b"hi\r\n")
    assert b"".join(tx.body_chunks()) == b"hi\r\n"
    assert decision.forged_headers(tx) == [("X-SPAM-flag", 2), ("X-Spam-Flag", 1)]  # counted per name, any case


field_names = st.sampled_from(["Subject", "X-Spam-Flag", "x-virus-status", "Received", "X-A", "To"])
field_values = st.one_of(st.text(max_size=40), st.sampled_from(["a\n b", "\r\n\t", "ngày \udcff", "y" * 300]))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(field_names, field_values), max_size=40),
    st.integers(min_value=1, max_value=12),
    st.integers(min_value=1, max_value=3000),
    st.integers(min_value=1, max_value=2000),
    st.binary(max_size=300),
)
def test_whatever_the_bounds_the_spool_holds_every_field_and_the_stored_ones_are_the_first(
    fields: list[tuple[str, str]], max_fields: int, max_bytes: int, threshold: int, body: bytes
) -> None:
    tx = Transaction(envelope=Envelope(), ruleset=RuleSet("v1", {}), spool=Spool(None, threshold),
                     max_header_fields=max_fields, max_header_bytes=max_bytes)  # fmt: skip
    for name, value in fields:
        tx.add_header(name, value)
    tx.add_body(body)  # ends the headers
    assert b"".join(tx.raw_chunks()) == header_block(fields) + body
    assert b"".join(tx.body_chunks()) == body
    assert tx.headers == fields[: len(tx.headers)] and len(tx.headers) <= max_fields
    assert tx.header_count == len(fields)
    assert tx.headers_truncated == (len(tx.headers) < len(fields))
    counts: dict[str, int] = {}
    own = []
    for name, _ in fields:
        counts[name.lower()] = counts.get(name.lower(), 0) + 1
        if name.lower().startswith(("x-spam-", "x-virus-status")):
            own.append((name, counts[name.lower()]))
    assert tx.own_headers == own[:max_fields]
    tx.close()


def test_the_own_header_record_is_bounded() -> None:
    tx = transaction(max_fields=10)
    for _ in range(1000):
        tx.add_header("X-Spam-Flag", "NO")
    assert len(tx.own_headers) == 10 and tx.headers_truncated  # more than that is a flood, refused as such


def test_a_transaction_built_by_hand_still_finds_forged_headers_and_rebuilds_its_message() -> None:
    tx = Transaction(envelope=Envelope(), ruleset=RuleSet("v1", {}))
    tx.headers = [("Subject", "x"), ("X-Virus-Scanned", "clean")]
    tx.body_loader = lambda: iter([b"hi"])
    assert decision.forged_headers(tx) == [("X-Virus-Scanned", 1)]
    assert b"".join(tx.raw_chunks()) == b"Subject: x\r\nX-Virus-Scanned: clean\r\n\r\nhi"


def test_close_releases_the_spool_and_the_facts() -> None:
    class Facts(MessageFacts):
        closed = 0

        def close(self) -> None:
            Facts.closed += 1

    tx = transaction()
    tx.add_header("Subject", "x")
    tx.facts_loader = Facts
    tx.facts()
    tx.close()
    assert Facts.closed == 1
    assert tx.spool is not None and tx.spool.closed
    with pytest.raises(ValueError):
        list(tx.raw_chunks())  # a check reading after the end is a bug: it raises (451), never reads nothing
    plain = transaction()
    plain._facts = MessageFacts()  # facts without a close method (before the walk spills text)
    plain.close()


# ---- the message file of `govmilter scan` --------------------------------------------------------

messages = st.lists(
    st.one_of(
        st.binary(max_size=30),
        st.sampled_from([b"\r\n", b"\n", b"\r", b": ", b"\r\n ", b"\n\t", b"\r\n\r\n", b"Subject:", b"\xff"]),
    ),
    max_size=30,
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_streamed_fields_are_what_the_whole_header_split_gave(data: bytes) -> None:
    fields, _ = iter_message_file(io.BytesIO(data))
    streamed = list(fields)
    assert streamed == _split_whole_header(data)
    listed, _ = read_message_file(io.BytesIO(data))
    assert listed == streamed


def _split_whole_header(data: bytes) -> list[tuple[str, str]]:
    """The previous read_message_file: the whole header block read, then split (the reference)."""
    stream = io.BytesIO(data)
    head = bytearray()
    for line in iter(stream.readline, b""):
        if line in (b"\n", b"\r\n"):
            break
        head += line
    headers: list[tuple[str, str]] = []
    for raw_line in bytes(head).replace(b"\r\n", b"\n").split(b"\n"):
        text = raw_line.decode("utf-8", "surrogateescape")
        if not text:
            continue
        if text[0] in " \t" and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + "\n" + text)
        elif ":" in text:
            name, _, value = text.partition(":")
            headers.append((name.strip(), value.lstrip(" ")))
    return headers


def test_scan_builds_the_spool_as_the_daemon_does_and_sees_past_a_header_flood() -> None:
    harness = Harness(skip=SERVICE_CHECKS)
    fields = [("From", "a@example.com"), ("To", "user@bacninh.gov.vn"), *filler(2001), *multipart_fields("x")]
    body = multipart_body("baocao.exe")
    message = message_bytes(fields, body)
    result = harness.scan(message, client_ip="127.0.0.3")
    try:
        tx = result.tx
        assert (tx.header_count, len(tx.headers), tx.headers_truncated) == (2006, 2000, True)
        assert b"".join(tx.raw_chunks()) == message
        assert b"".join(tx.body_chunks()) == body
        facts = tx.facts()
        assert "baocao.exe" in [part.filename for part in facts.parts]
        assert any(MARKER in text.text for text in facts.texts)
        assert result.verdict.refuses  # the .exe behind the flood (or, later, the flood itself)
    finally:
        result.close()
    assert tx.spool is not None and tx.spool.closed


def test_the_scan_command_prints_its_result_and_then_releases_the_message() -> None:
    fields = [("From", "a@example.com"), *filler(2100), *multipart_fields("x")]
    result = subprocess.run(
        [sys.executable, "-m", "govmilter", "scan", "--json", "--set", f'rules.dir="{RULES}"',
         *[arg for name in SERVICE_CHECKS for arg in ("--skip", name)],
         "--mail-from", "a@example.com", "--rcpt", "user@bacninh.gov.vn", "--client-ip", "127.0.0.3", "-"],
        input=message_bytes(fields, multipart_body("baocao.exe")),
        capture_output=True,
        cwd=ROOT,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert b'"action": "reject"' in result.stdout, result.stdout
    assert b"Traceback" not in result.stderr


# ---- [milter] configuration ----------------------------------------------------------------------


def test_the_header_bounds_are_configurable_and_validated() -> None:
    config = load_config(None, ["milter.max_header_fields=10", "milter.max_header_bytes=2048"])
    assert (config.milter.max_header_fields, config.milter.max_header_bytes) == (10, 2048)
    defaults = load_config(None)
    assert (defaults.milter.max_header_fields, defaults.milter.max_header_bytes) == (2000, 4 * 1024 * 1024)
    bad: list[tuple[str, Any]] = [
        ("max_header_fields", 0),
        ("max_header_fields", -1),
        ("max_header_bytes", 100),
        ("max_header_bytes", 1 << 30),
        ("spool_threshold", 0),  # 0 would keep every message in memory
        ("max_header_fields", '"many"'),
    ]
    for key, value in bad:
        with pytest.raises(ConfigError, match=f"\\[milter\\] {key}"):
            load_config(None, [f"milter.{key}={value}"])


# ---- found by the mutation run of 2026-12-04 (docs/mutation.md) -----------------------------------------


def field_of(chars: int) -> tuple[str, str]:
    """A field whose line (`Name: value` CRLF, ASCII, no fold) is `chars` characters."""
    return ("X-Fill", "v" * (chars - len("X-Fill: \r\n")))


def test_header_fields_wait_in_memory_until_a_chunk_of_characters_then_are_written() -> None:
    """add_header counts each field's line (name, value, ': ' and CRLF) and writes the waiting fields
    once CHUNK characters wait; the count starts again after each write."""
    spool = Spool(None, 1 << 20)
    spool.add_header(*field_of(CHUNK - 1))
    assert spool.size == 0  # one character short: still waiting
    spool.add_header("A", "")  # 5 characters more: written
    assert spool.size == CHUNK + 4
    spool.add_header(*field_of(CHUNK))  # exactly CHUNK after a write: written at once
    assert spool.size == 2 * CHUNK + 4
    spool.add_header(*field_of(CHUNK - 1))
    assert spool.size == 2 * CHUNK + 4  # waiting again
    spool.end_headers()
    fields = [field_of(CHUNK - 1), ("A", ""), field_of(CHUNK), field_of(CHUNK - 1)]
    assert b"".join(spool.chunks()) == header_block(fields)  # the fields in order, then the empty line
    first = Spool(None, 1 << 20)
    first.add_header(*field_of(CHUNK))  # the first field alone reaches CHUNK
    assert first.size == CHUNK


def test_the_spool_stays_in_memory_up_to_its_threshold_and_goes_to_disk_past_it() -> None:
    spool = Spool(None, 100)
    spool.end_headers()
    spool.write(b"x" * 98)
    assert spool.size == 100 and spool.on_disk is False and spool.closed is False  # exactly the threshold
    spool.write(b"y")
    assert spool.on_disk is True
    assert b"".join(spool.chunks()) == b"\r\n" + b"x" * 98 + b"y"
    spool.close()
    assert spool.closed is True


ROLL_OVER_ON_A_FULL_DISK = """
import os, resource, sys
from govmilter.spool import Spool
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))  # the disk is full at 4 kB (EFBIG)
spool = Spool(sys.argv[1], 8192)
try:
    spool.write(b"x" * 10000)
except OSError as exc:
    error = exc  # kept: its traceback holds the frame that made the temporary file
    names = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            names.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    print(type(error).__name__, sum("/govmilter-" in name for name in names))
"""


def test_a_roll_over_to_a_full_disk_fails_and_closes_its_temporary_file(tmp_path: Any) -> None:
    """The error goes up (the adapter answers 451); the half-written file is not left open."""
    run = subprocess.run(
        [sys.executable, "-c", ROLL_OVER_ON_A_FULL_DISK, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert run.stdout.split() == ["OSError", "0"], run.stdout + run.stderr


def test_a_crlf_split_by_the_read_chunk_and_a_last_lone_cr_come_back_as_they_were() -> None:
    body = b"a" * (CHUNK - 1) + b"\r\n" + b"b\r"  # the first read of the body ends between CR and LF
    fields, chunks = read_message_file(io.BytesIO(b"Subject: x\r\n\r\n" + body))
    assert fields == [("Subject", "x")]
    assert b"".join(chunks) == body


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["Subject", "To", "X-A"]), st.text(alphabet="ab \t\r\n", max_size=12)), max_size=5
    ),
    st.binary(max_size=300).map(lambda b: b.replace(b"\x00", b"")),
)
def test_a_message_read_from_a_file_spools_with_every_line_ending_in_crlf(
    fields: list[tuple[str, str]], body: bytes
) -> None:
    """Transaction.crlf vouches for it: the DKIM body hash then skips its look for bare LFs."""
    text = "".join(f"{n}: {v.replace(chr(10), chr(10) + ' ')}\n" for n, v in fields).encode() + b"\n" + body
    headers, chunks = iter_message_file(io.BytesIO(text))
    tx = Transaction(envelope=Envelope(), ruleset=RuleSet("v1", {}), spool=Spool(None, 64))
    for name, value in headers:
        tx.add_header(name, value)
    tx.end_headers()
    for chunk in chunks:
        tx.add_body(chunk)
    raw = b"".join(tx.raw_chunks())
    assert tx.crlf
    assert raw.count(b"\n") == raw.count(b"\r\n"), raw
    tx.close()
