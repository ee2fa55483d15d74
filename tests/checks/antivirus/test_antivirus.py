"""The antivirus check through the pipeline, against a real clamd (lab/stack.py Clamd)."""

from __future__ import annotations

import base64
import gzip
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from adversarial.generate import yenc
from govmilter import __version__
from govmilter.checks.antivirus.check import safe_signature
from govmilter.clients.clamd import ClamdClient, Outcome
from govmilter.config import ConfigError, load_config
from govmilter.model import Action
from govmilter.pipeline import CHECK_NAMES
from support.clamd_fixture import ClamdFactory
from support.fake_clamd import FakeClamd
from support.harness import Harness
from support.lab_clamd import EICAR, TESTFILES, LabClamd
from support.virus_samples import SAMPLES, eicar_zip_in_eml, expected_signature, mail, sample_mail

# only the antivirus check (and the size check that precedes it) is under test here: the attachment
# rules would refuse the .exe samples before clamd sees them, and the DNSBL check needs DNS
OTHERS = [name for name in CHECK_NAMES if name not in ("size", "antivirus")]


def harness(addresses: Sequence[str], *settings: str) -> Harness:
    listed = ", ".join(f'"{a}"' for a in addresses)
    return Harness([f"antivirus.clamd=[{listed}]", *settings], skip=OTHERS)


@pytest.fixture(scope="module")
def scanner(clamd: LabClamd) -> Harness:
    return harness([clamd.address])


@pytest.mark.parametrize("sample", SAMPLES)
def test_every_clamav_testfile_attached_is_refused_with_its_signature(scanner: Harness, sample: str) -> None:
    result = scanner.scan(sample_mail(sample))
    signature = expected_signature(sample)
    assert result.verdict.action is Action.REJECT
    assert result.verdict.check == "antivirus" and result.verdict.rule == "virus-found"
    assert (result.verdict.code, result.verdict.enhanced) == ("554", "5.7.1")
    assert f"Thu co chua virus {signature} (QD 06/2022 Dieu 8.2) - virus found: {signature}" == result.verdict.text


def test_the_samples_are_there() -> None:
    assert len(SAMPLES) >= 40, f"clamav-testfiles is missing or incomplete in {TESTFILES}"


def test_eicar_in_a_zip_inside_an_attached_eml_is_refused(scanner: Harness) -> None:
    result = scanner.scan(eicar_zip_in_eml())
    assert result.verdict.action is Action.REJECT
    assert result.verdict.smtp_reply() == (
        "554 5.7.1 Thu co chua virus Eicar-Test-Signature.UNOFFICIAL (QD 06/2022 Dieu 8.2)"
        " - virus found: Eicar-Test-Signature.UNOFFICIAL"
    )
    assert result.verdict.text.isascii() and "%" not in result.verdict.text


def test_clean_message_passes_with_x_virus_scanned(scanner: Harness, clamd: LabClamd) -> None:
    result = scanner.scan(mail("bao cao sach", [("baocao.txt", b"So lieu quy 3.\n" * 500)]))
    assert result.verdict.action is Action.ACCEPT
    scanned = dict(result.verdict.headers)["X-Virus-Scanned"]
    version = clamd_version(clamd)
    assert scanned == f"govmilter {__version__} with ClamAV {version}"
    assert "X-Virus-Status" not in dict(result.verdict.headers)


def clamd_version(server: LabClamd) -> str:
    from govmilter.clients.clamd import ClamdClient

    return ClamdClient(server.address).version(time.monotonic() + 10)


def test_metrics_count_scans_signatures_and_clamd_state(clamd: LabClamd) -> None:
    scanner = harness([clamd.address])
    scanner.scan(mail("sach"))
    scanner.scan(mail("virus", [("x.com", EICAR)]))
    scanner.scan(mail("virus 2", [("y.com", EICAR)]))
    value = scanner.metrics.registry.get_sample_value
    assert value("govmilter_antivirus_scans_total", {"result": "clean"}) == 1
    assert value("govmilter_antivirus_scans_total", {"result": "found"}) == 2
    assert value("govmilter_antivirus_signatures_total", {"signature": "Eicar-Test-Signature.UNOFFICIAL"}) == 2
    assert value("govmilter_clamd_up", {"address": clamd.address}) == 1
    assert value("govmilter_antivirus_scan_duration_seconds_count") == 3
    assert value("govmilter_rule_hits_total", {"check": "antivirus", "rule": "virus-found", "mode": "enforce"}) == 2


# --- clamd away: the failure policy per direction ---------------------------------------


def test_clamd_away_tempfails_inbound_by_default(tmp_path: Path) -> None:
    scanner = harness([f"unix:{tmp_path}/no-clamd.sock"])
    result = scanner.scan(mail("khong quet duoc"))
    assert result.verdict.action is Action.TEMPFAIL
    assert result.verdict.smtp_reply() == (
        "451 4.7.1 Tam thoi khong quet duoc virus, vui long gui lai sau (QD 06/2022 Dieu 8.2)"
        " - virus scanning is temporarily unavailable, please try again later"
    )
    value = scanner.metrics.registry.get_sample_value
    assert value("govmilter_antivirus_scans_total", {"result": "error"}) == 1
    assert value("govmilter_clamd_up", {"address": f"unix:{tmp_path}/no-clamd.sock"}) == 0


def test_failure_policy_follows_the_direction(tmp_path: Path) -> None:
    scanner = harness(
        [f"unix:{tmp_path}/no-clamd.sock"],
        'antivirus.on_failure_inbound="reject"',
        'antivirus.on_failure_outbound="accept"',
        "antivirus.breaker_failures=1000",
    )
    inbound = scanner.scan(mail("vao"), client_ip="127.0.0.2")
    assert inbound.verdict.action is Action.REJECT
    assert inbound.verdict.smtp_reply().startswith("554 5.7.1 Khong quet duoc virus")
    # a trusted relay is the outbound side; so is an authenticated user
    for outbound in (
        scanner.scan(mail("ra"), client_ip="127.0.0.1", rcpts=["partner@example.com"]),
        scanner.scan(mail("ra 2"), client_ip="203.0.113.9", auth_user="canbo", rcpts=["partner@example.com"]),
    ):
        assert outbound.verdict.action is Action.ACCEPT
        headers = dict(outbound.verdict.headers)
        assert "X-Virus-Scanned" not in headers
        assert headers["X-Virus-Status"].startswith("not scanned")


# --- size limits: never taken for clean ---------------------------------------------------


@pytest.fixture(scope="module")
def small_clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabClamd]:
    with LabClamd(
        tmp_path_factory.mktemp("small-clamd"), stream_max_length="1M", settings={"MaxFileSize": "512K"}
    ) as server:
        yield server


BIG = mail("lon", [("solieu.bin", bytes(range(256)) * 8192)])  # 2 MiB attachment, 2.7 MB raw
MEDIUM = mail("vua", [("solieu.bin", bytes(range(256)) * 2400)])  # 600 KiB: under the stream limit, over MaxFileSize
ANSWERS = {
    "stream-max-length": "INSTREAM size limit exceeded",
    "max-file-size": "Heuristics.Limits.Exceeded.MaxFileSize",
}


@pytest.mark.parametrize(
    ("policy", "action", "reply"),
    [
        ("tempfail", Action.TEMPFAIL, "451 4.7.1 Thu qua lon de quet virus luc nay"),
        ("reject", Action.REJECT, "552 5.3.4 Thu qua lon de quet virus, thu bi tu choi"),
        ("accept", Action.ACCEPT, ""),
    ],
)
@pytest.mark.parametrize("kind", ["stream-max-length", "max-file-size"])
def test_size_limit_follows_on_size_limit(
    small_clamd: LabClamd, policy: str, action: Action, reply: str, kind: str
) -> None:
    # clamd_max_file_size says what small_clamd's MaxFileSize is: MEDIUM is too large itself
    scanner = harness(
        [small_clamd.address], f'antivirus.on_size_limit="{policy}"', "antivirus.clamd_max_file_size=524288"
    )
    result = scanner.scan(BIG if kind == "stream-max-length" else MEDIUM)
    assert result.verdict.action is action
    assert result.verdict.smtp_reply().startswith(reply)
    hits = [hit for hit in result.tx.hits if hit.check == "antivirus"]
    assert [hit.rule for hit in hits] == ["size-limit"]
    assert ANSWERS[kind] in hits[0].reason
    if action is Action.ACCEPT:
        headers = dict(result.verdict.headers)
        assert "X-Virus-Scanned" not in headers
        assert "too large" in headers["X-Virus-Status"]
    value = scanner.metrics.registry.get_sample_value
    assert value("govmilter_antivirus_scans_total", {"result": "size_limit"}) == 1


def gzip_of_zeros(mib: int) -> bytes:
    return gzip.compress(bytes(mib << 20), compresslevel=1, mtime=0)


@pytest.mark.parametrize(
    ("policy", "action", "reply"),
    [
        ("reject", Action.REJECT, "554 5.7.1 Thu chua tep nen giai nen qua lon de quet virus (bom nen)"),
        ("tempfail", Action.TEMPFAIL, "451 4.7.1 Thu chua tep nen giai nen qua lon de quet virus"),
        ("accept", Action.ACCEPT, ""),
    ],
)
def test_a_small_message_that_expands_past_max_file_size_follows_on_expansion_limit(
    small_clamd: LabClamd, policy: str, action: Action, reply: str
) -> None:
    bomb = mail("nhat ky", [("nhat-ky.log.gz", gzip_of_zeros(4))])  # 4 KiB that expand to 4 MiB
    assert len(bomb) < 524288
    scanner = harness(
        [small_clamd.address], f'antivirus.on_expansion_limit="{policy}"', "antivirus.clamd_max_file_size=524288"
    )
    result = scanner.scan(bomb)
    assert result.verdict.action is action
    assert result.verdict.smtp_reply().startswith(reply)
    hits = [hit for hit in result.tx.hits if hit.check == "antivirus"]
    assert [hit.rule for hit in hits] == ["expansion-limit"]
    assert "Heuristics.Limits.Exceeded.MaxFileSize" in hits[0].reason
    if action is Action.REJECT:
        assert "QD 06/2022 Dieu 8.2" in result.verdict.text and result.verdict.text.isascii()
    if action is Action.ACCEPT:
        assert "expands past" in dict(result.verdict.headers)["X-Virus-Status"]


def test_expansion_limit_is_rejected_by_default_and_size_limit_stays_for_large_messages(
    small_clamd: LabClamd,
) -> None:
    scanner = harness([small_clamd.address], "antivirus.clamd_max_file_size=524288")
    bomb = scanner.scan(mail("nhat ky", [("nhat-ky.log.gz", gzip_of_zeros(4))]))
    assert (bomb.verdict.rule, bomb.verdict.code, bomb.verdict.enhanced) == ("expansion-limit", "554", "5.7.1")
    assert scanner.scan(MEDIUM).verdict.rule == "size-limit"  # 800 kB raw: the message itself is too large
    # "INSTREAM size limit exceeded" (StreamMaxLength) is never an expansion
    assert scanner.scan(BIG).verdict.rule == "size-limit"


def test_a_virus_ahead_of_the_size_limit_is_still_found(small_clamd: LabClamd) -> None:
    # the sample comes first in the stream: clamd never reaches its limit
    scanner = harness([small_clamd.address])
    result = scanner.scan(mail("virus truoc", [("a.com", EICAR)]))
    assert result.verdict.rule == "virus-found"


# --- clamd stops, hangs, comes back ------------------------------------------------------


def test_clamd_stopped_then_back_is_scanned_without_rebuilding(clamd_factory: ClamdFactory) -> None:
    server = clamd_factory()
    scanner = harness([server.address], "antivirus.breaker_failures=2", "antivirus.breaker_cooldown=0.2")
    assert scanner.scan(mail("truoc")).verdict.action is Action.ACCEPT
    server.stop()
    for n in range(3):
        result = scanner.scan(mail(f"trong luc {n}"))
        assert result.verdict.action is Action.TEMPFAIL
        assert result.verdict.code == "451" and result.verdict.enhanced == "4.7.1"
    server.start()
    time.sleep(0.3)  # the breaker's cooldown, not a timing assertion
    result = scanner.scan(mail("sau", [("a.com", EICAR)]))
    assert result.verdict.rule == "virus-found"
    assert scanner.scan(mail("sau sach")).verdict.action is Action.ACCEPT
    value = scanner.metrics.registry.get_sample_value
    assert value("govmilter_clamd_up", {"address": server.address}) == 1
    assert value("govmilter_antivirus_scans_total", {"result": "circuit_open"}) == 1


def test_silent_clamd_tempfails_within_the_timeout_while_other_scans_flow(clamd: LabClamd) -> None:
    with FakeClamd("silent") as fake:
        hung = harness([fake.address], "antivirus.scan_timeout=3.0")
        healthy = harness([clamd.address])
        results: list[object] = []

        def scan_hung() -> None:
            started = time.monotonic()
            results.append(hung.scan(mail("treo")))
            results.append(time.monotonic() - started)

        thread = threading.Thread(target=scan_hung)
        thread.start()
        fake.wait_accepted(1)
        for n in range(10):
            assert healthy.scan(mail(f"binh thuong {n}", [("a.com", EICAR)])).verdict.rule == "virus-found"
        assert thread.is_alive()  # the hung scan was still waiting all along
        thread.join(60)
        verdict = results[0].verdict  # type: ignore[attr-defined]
        assert verdict.smtp_reply().startswith("451 4.7.1")
        assert 2.9 <= results[1] < 15.0  # type: ignore[operator]  # generous: the budget is 3 s
        value = hung.metrics.registry.get_sample_value
        assert value("govmilter_antivirus_scans_total", {"result": "timeout"}) == 1


def test_failover_to_the_next_address(clamd: LabClamd, tmp_path: Path) -> None:
    scanner = harness([f"unix:{tmp_path}/gone.sock", clamd.address])
    result = scanner.scan(mail("du phong", [("a.com", EICAR)]))
    assert result.verdict.rule == "virus-found"


def test_signature_names_are_made_safe_for_replies() -> None:
    assert safe_signature("Win.Trojan.Agent-123 %s\r\nX: y") == "Win.Trojan.Agent-123__s__X:_y"
    assert safe_signature("") == "unknown"
    assert len(safe_signature("A" * 500)) == 100


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ('antivirus.clamd=["tcp:127.0.0.1"]', "expected unix:PATH or tcp:HOST:PORT"),
        ('antivirus.clamd=["/run/clamd.ctl"]', "expected unix:PATH or tcp:HOST:PORT"),
        ("antivirus.clamd=[]", "no address"),
        ("antivirus.scan_timeout=0", "must be positive"),
        ("antivirus.connect_timeout=-1", "must be positive"),
        ("antivirus.breaker_failures=0", "at least 1"),
        ("antivirus.clamd_max_file_size=0", "MaxFileSize"),
        ('antivirus.on_expansion_limit="drop"', "on_expansion_limit"),
        ("antivirus.max_embedded_scans=-1", "max_embedded_scans"),
    ],
)
def test_bad_antivirus_settings_are_refused_at_load(setting: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [setting])


# --- copies of one message reuse the first copy's answer -----------------------------------


def copy_of(message: bytes, **fields: str) -> bytes:
    """The same message with fields replaced where they stand, or added in front as a relay would."""
    head, body = message.split(b"\n\n", 1)
    wanted = {name.replace("_", "-"): value for name, value in fields.items()}
    lines = []
    for line in head.split(b"\n"):
        name = line.split(b":", 1)[0].decode().lower()
        lines.append(f"{name}: {wanted.pop(name)}".encode() if name in wanted else line)
    added = [f"{name}: {value}".encode() for name, value in wanted.items()]
    return b"\n".join(added + lines) + b"\n\n" + body


def cache_count(scanner: Harness, result: str) -> float | None:
    return scanner.metrics.registry.get_sample_value("govmilter_antivirus_cache_total", {"result": result})


def test_a_copy_with_other_trace_fields_reuses_the_answer_without_asking_clamd(clamd_factory: ClamdFactory) -> None:
    server = clamd_factory()
    scanner = harness([server.address])
    circular = mail("Cong van so 12", [("congvan.txt", b"Noi dung cong van.\n" * 200)])
    virus = mail("Cong van so 13", [("x.com", EICAR)])
    assert scanner.scan(circular).verdict.action is Action.ACCEPT
    assert scanner.scan(virus).verdict.rule == "virus-found"
    server.stop()  # from here on only the remembered answers can decide
    copy = copy_of(
        circular,
        to="other@bacninh.gov.vn",
        message_id="<copy-2@example.com>",
        date="Mon, 23 Nov 2026 10:00:00 +0700",
        received="from relay.example.com (relay [192.0.2.1]) by mx; Mon, 23 Nov 2026 10:00:00 +0700",
    )
    result = scanner.scan(copy)
    assert result.verdict.action is Action.ACCEPT
    assert dict(result.verdict.headers)["X-Virus-Scanned"].startswith(f"govmilter {__version__} with ClamAV ")
    virus_copy = scanner.scan(copy_of(virus, to="third@bacninh.gov.vn", message_id="<copy-3@example.com>"))
    assert virus_copy.verdict.rule == "virus-found" and "Eicar-Test-Signature" in virus_copy.verdict.text
    # another body, or another subject, is another message: clamd (stopped) must be asked
    assert scanner.scan(mail("Cong van so 14")).verdict.action is Action.TEMPFAIL
    assert scanner.scan(copy_of(circular, subject="Cong van so 12 (sua)")).verdict.action is Action.TEMPFAIL
    # a per-copy field too long to be a header line is part of the key
    assert scanner.scan(copy_of(circular, received="x" * 999)).verdict.action is Action.TEMPFAIL
    assert cache_count(scanner, "hit") == 2 and cache_count(scanner, "miss") == 5


def test_a_new_clamav_version_is_not_answered_from_the_cache(clamd_factory: ClamdFactory) -> None:
    server = clamd_factory()
    scanner = harness([server.address])
    circular = mail("Thong bao", [("thongbao.txt", b"Thong bao.\n" * 100)])
    assert scanner.scan(circular).verdict.action is Action.ACCEPT
    check = next(c for c in scanner.pipeline.checks if c.name == "antivirus")
    address, (version, fetched) = next(iter(check.pool._versions.items()))
    check.pool._versions[address] = (version + " (new signatures)", fetched)  # as a refresh after an update
    server.stop()
    assert scanner.scan(copy_of(circular, message_id="<again@example.com>")).verdict.action is Action.TEMPFAIL


def test_cache_ttl_zero_scans_every_copy(clamd_factory: ClamdFactory) -> None:
    server = clamd_factory()
    scanner = harness([server.address], "antivirus.cache_ttl=0")
    circular = mail("Thong bao", [("thongbao.txt", b"Thong bao.\n" * 100)])
    assert scanner.scan(circular).verdict.action is Action.ACCEPT
    assert scanner.scan(copy_of(circular, message_id="<b@example.com>")).verdict.action is Action.ACCEPT
    assert scanner.metrics.registry.get_sample_value("govmilter_antivirus_scans_total", {"result": "clean"}) == 2
    server.stop()
    assert scanner.scan(copy_of(circular, message_id="<c@example.com>")).verdict.action is Action.TEMPFAIL
    assert cache_count(scanner, "hit") is None


# --- files encoded in body text that clamd does not decode -----------------------------------


def text_mail(body: bytes, content_type: str = "text/plain; charset=utf-8", subject: str = "Tep") -> bytes:
    return (
        f"From: partner@example.com\r\nTo: user@bacninh.gov.vn\r\nSubject: {subject}\r\n"
        f"Message-ID: <{time.monotonic_ns()}@example.com>\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: {content_type}\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    ).encode() + body


def data_uri(data: bytes, media: str = "application/octet-stream") -> bytes:
    return b"data:" + media.encode() + b";base64," + base64.b64encode(data)


def samples() -> list[tuple[bytes, str]]:
    found = [(EICAR, "Eicar-Test-Signature.UNOFFICIAL")]
    if (TESTFILES / "clam.exe").exists():
        found.append(((TESTFILES / "clam.exe").read_bytes(), "ClamAV-Test-File.UNOFFICIAL"))
    return found


def test_eicar_with_a_trailing_line_break_is_found(scanner: Harness) -> None:
    # the EICAR specification allows trailing white space; the test database finds it as ClamAV does
    result = scanner.scan(text_mail(EICAR + b"\r\n", "text/plain; charset=us-ascii"))
    assert result.verdict.rule == "virus-found" and "Eicar-Test-Signature" in result.verdict.text


@pytest.mark.parametrize("where", ["yenc", "data-uri-plain", "data-uri-css"])
@pytest.mark.parametrize("sample", range(2))
def test_files_clamd_does_not_decode_are_scanned_on_their_own(scanner: Harness, where: str, sample: int) -> None:
    if sample >= len(samples()):
        pytest.fail("clam.exe is not installed (Debian package clamav-testfiles, lab/install-deps.sh)")
    data, signature = samples()[sample]
    if where == "yenc":
        message = text_mail(b"Tep:\r\n" + yenc(data, "tep.bin"))
    elif where == "data-uri-plain":
        message = text_mail(b"Xem <" + data_uri(data) + b"> nhe.\r\n")
    else:
        style = b'<div style="background:url(' + data_uri(data, "image/png") + b')">x</div>\r\n'
        message = text_mail(style, "text/html; charset=utf-8")
    whole = ClamdClient(scanner.config.antivirus.clamd[0]).instream([message], time.monotonic() + 30)
    assert whole.outcome is Outcome.CLEAN  # clamd alone does not see it: the reason for the extra scan
    result = scanner.scan(message)
    assert result.verdict.rule == "virus-found"
    assert result.verdict.text == f"Thu co chua virus {signature} (QD 06/2022 Dieu 8.2) - virus found: {signature}"


def test_clean_embedded_files_pass_and_each_is_one_more_scan(clamd: LabClamd) -> None:
    scanner = harness([clamd.address], "antivirus.cache_ttl=0")
    pictures = b" ".join(b'<img src="' + data_uri(bytes([i]) * 300, "image/png") + b'">' for i in range(3))
    result = scanner.scan(text_mail(pictures + b"\r\n", "text/html; charset=utf-8"))
    assert result.verdict.action is Action.ACCEPT
    assert "X-Virus-Scanned" in dict(result.verdict.headers)
    assert scanner.metrics.registry.get_sample_value("govmilter_antivirus_scans_total", {"result": "clean"}) == 4


def test_past_max_embedded_scans_the_message_is_not_scanned_whole(clamd: LabClamd) -> None:
    scanner = harness([clamd.address], "antivirus.max_embedded_scans=2", 'antivirus.on_size_limit="reject"')
    blocks = b"".join(b"Anh <" + data_uri(bytes([i]) * 100) + b">\r\n" for i in range(3))
    result = scanner.scan(text_mail(blocks))
    assert (result.verdict.rule, result.verdict.code) == ("size-limit", "552")
    assert "max_embedded_scans" in result.verdict.reason
    # a virus among the files that are scanned is still refused as a virus
    first = b"Anh <" + data_uri(EICAR) + b">\r\n"
    assert scanner.scan(text_mail(first + blocks)).verdict.rule == "virus-found"


def test_headers_past_the_stored_bound_are_never_answered_from_the_cache(clamd_factory: ClamdFactory) -> None:
    server = clamd_factory()
    scanner = harness([server.address], "milter.max_header_fields=20", 'size.malformed_action="accept"')
    filler = "".join(f"X-Filler-{i}: {i}\r\n" for i in range(30))
    message = ("Subject: Thong bao\r\n" + filler + "\r\nNoi dung.\r\n").encode()
    first = scanner.scan(message)
    assert first.tx.headers_truncated and first.verdict.action is Action.ACCEPT
    server.stop()  # only a cached answer could accept the copy now
    copy = message.replace(b"X-Filler-29: 29", b"X-Filler-29: other")
    assert scanner.scan(copy).verdict.action is Action.TEMPFAIL
    assert cache_count(scanner, "hit") is None
