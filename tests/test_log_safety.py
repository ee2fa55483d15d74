"""Nothing from the wire reaches a log line unescaped, and no secret reaches the log at all.

CR, LF and other control characters are put into HELO, MAIL FROM, RCPT, header
fields, forwarding traces, attachment names and an exception's message; every
record must stay one line, both as the code writes it (the decision and
forwarding lines clean their values) and as the daemon's formatter prints it
(which escapes what is left, tracebacks included). The decision line is logfmt:
read by a strict logfmt parser it has exactly our fields, each once, with the
values from the wire intact, whatever they carry. A Redis password must not
show in a log line or an error message.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from urllib.parse import quote

import Milter
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from govmilter import decision, logfmt
from govmilter.checks import CheckHooks
from govmilter.clients.redis import RedisStore, redact_url
from govmilter.logfmt import FORMAT, OneLineFormatter, one_line
from govmilter.model import Action, Envelope, Mode, Stage, Transaction, Verdict
from govmilter.ruleset import RuleSet
from govmilter.runtime import Runtime
from stack import free_port
from support.harness import ROOT, RULES, Harness
from support.logfmt_parse import LogfmtError, parse, parse_dict
from support.milter_ctx import SERVICE_CHECKS, TestCtx, adapter_runtime

FORGED = "\r\nqueue_id=FORGED client=127.0.0.1 action=accept\r\n"
NASTY = f"x{FORGED}\x00\x1b[31m\x7f\u2028\udcff"
# the MAIL FROM: a quoted local part is a valid address, and it carries a whole forged record
FORGED_SENDER = '"x action=accept check=- rule=- queue_id=FORGED client=10.0.0.1"@example.com'
FORMATTER = OneLineFormatter(FORMAT)
DECISION_KEYS = [
    "queue_id", "client", "auth", "from", "rcpts", "action", "check", "rule", "reply", "ruleset", "size", "message_id"
]  # fmt: skip


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    yield from adapter_runtime(monkeypatch)


def drive(ctx: TestCtx, helo: str, sender: str, rcpts: list[str], headers: list[tuple[str, str]], body: bytes,
          ip: str = "127.0.0.2") -> int:  # fmt: skip
    """The callbacks in libmilter's order, with values as pymilter hands them over (str)."""
    ctx._setsymval("i", "4ABC\r\nDEF")
    assert ctx._connect(helo=helo, ip=ip) == Milter.CONTINUE
    rc = ctx._envfrom(f"<{sender}>")
    if rc != Milter.CONTINUE:
        return int(rc)
    for rcpt in rcpts:
        ctx._envrcpt(f"<{rcpt}>")
    for name, value in headers:
        ctx._priv.header(name, value)
    rc = ctx._eoh()
    if rc != Milter.CONTINUE:
        return int(rc)
    rc = ctx._priv.body(body)
    if rc != Milter.CONTINUE:
        return int(rc)
    return int(ctx._eom())


def assert_one_line_each(records: list[logging.LogRecord]) -> list[str]:
    """Every record prints as one line without control characters; returns the printed lines."""
    printed = []
    for record in records:
        line = FORMATTER.format(record)
        assert "\n" not in line and "\r" not in line, line
        assert not any(unsafe(c) for c in line), line
        printed.append(line)
    assert not any("queue_id=FORGED" in line.split(": ", 1)[-1][:20] for line in printed)
    return printed


def unsafe(char: str) -> bool:
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F or code in (0x2028, 0x2029) or 0xD800 <= code <= 0xDFFF


def clean_message(record: logging.LogRecord) -> None:
    """The decision and forwarding lines clean wire values themselves, before any formatter."""
    message = record.getMessage()
    assert not any(unsafe(c) for c in message), message


MULTIPART = [("Content-Type", 'multipart/mixed; boundary="b1"'), ("MIME-Version", "1.0")]


def multipart_body(filename: str) -> bytes:
    encoded = quote(filename, safe="", errors="surrogateescape")
    return (
        b"--b1\r\nContent-Type: text/plain\r\n\r\nxin chao\r\n"
        b"--b1\r\nContent-Type: application/octet-stream\r\n"
        + f"Content-Disposition: attachment; filename*=utf-8''{encoded}\r\n".encode()
        + b"Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAA\r\n--b1--\r\n"
    )


def test_inbound_forward_with_control_characters_everywhere(runtime: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ctx = TestCtx()
    headers = [
        ("From", f"Ke gia mao <a{NASTY}@example.com>"),
        ("To", f"user@bacninh.gov.vn{NASTY}"),
        ("Subject", f"chao{NASTY}"),
        ("Message-ID", f"<id{NASTY}@example.com>"),
        ("X-Sieve-Redirected-From", "<fwd\x1b\x00x@gmail.com>"),
        *MULTIPART,
    ]
    rc = drive(ctx, f"helo{NASTY}", f"sender{NASTY}@example.com", ["user@bacninh.gov.vn", f"other{NASTY}@x.vn"],
               headers, multipart_body(f"bao cao{NASTY}.exe"))  # fmt: skip
    assert rc == Milter.REJECT  # an inbound forward by a gmail.com mailbox
    printed = assert_one_line_each(caplog.records)
    decisions = [r for r in caplog.records if r.name == "govmilter.decision"]
    forwards = [r for r in caplog.records if r.name == "govmilter.forwarding"]
    assert len(decisions) == 1 and len(forwards) == 1
    for record in decisions + forwards:
        clean_message(record)
    line = parse_dict(decisions[0].getMessage())  # a logfmt reader sees our fields, each once, values intact
    assert list(line) == [*DECISION_KEYS, "hits", "ms"]
    assert line["message_id"] == f"<id{NASTY}@example.com>"
    assert line["hits"] == "forwarding/inbound-sieve-redirect"
    assert line["queue_id"] == "4ABC\r\nDEF"
    assert line["client"] == "127.0.0.2"
    assert line["from"] == f"<sender{NASTY}@example.com>"
    assert line["rcpts"] == f"user@bacninh.gov.vn,other{NASTY}@x.vn"
    assert (line["action"], line["check"], line["rule"]) == ("reject", "forwarding", "inbound-sieve-redirect")
    assert "forwarder=fwd??x@gmail.com" in forwards[0].getMessage()
    assert len(printed) >= 2


def test_a_forged_mail_from_cannot_add_a_field_to_the_decision_line(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    ctx = TestCtx()
    ctx.addheader = lambda name, value, idx: None  # type: ignore[method-assign]
    rcpt = 'user@bacninh.gov.vn" action=accept rule="-'
    rc = drive(ctx, "h", FORGED_SENDER, [rcpt], [("From", "a@example.com"), ("Subject", "x")], b"hi\r\n",
               ip="127.0.0.3")  # fmt: skip
    assert rc == Milter.ACCEPT
    [record] = [r for r in caplog.records if r.name == "govmilter.decision"]
    line = parse_dict(record.getMessage())
    assert list(line) == [*DECISION_KEYS, "ms"]
    assert line["queue_id"] == "4ABC\r\nDEF"  # what the test context's "i" macro carries, not FORGED
    assert line["message_id"] == "-"
    assert (line["client"], line["action"], line["check"], line["rule"]) == ("127.0.0.3", "accept", "-", "-")
    assert line["from"] == f"<{FORGED_SENDER}>"
    assert line["rcpts"] == rcpt


def test_the_logfmt_parser_of_these_tests_reads_the_old_forged_line_as_forged() -> None:
    # the line this test file used to assert as correct: a logfmt reader saw a second action and queue id
    old = (
        "queue_id=4ABC client=127.0.0.2 from=<x action=accept queue_id=FORGED client=10.0.0.1@example.com>"
        " action=reject"
    )
    keys = [key for key, _ in parse(old)]
    assert keys.count("action") == 2 and "queue_id" in keys[1:]
    with pytest.raises(LogfmtError):
        parse_dict(old)
    with pytest.raises(LogfmtError):
        parse('from="unterminated')
    with pytest.raises(LogfmtError):
        parse("a=b=c")


WIRE_TEXT = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=st.sampled_from(list(' "=\\\n\r\t\x00\x1b\x7f\x85\u2028\u202e\udcff<>@,.-_aZ9ố')), max_size=60),
    st.sampled_from([FORGED_SENDER, FORGED, NASTY, "", "-", " ", '"', "\\", "a=b", "x\\", '\\"']),
)


def _same_or_cut(found: str, value: str) -> bool:
    """The value itself, or a prefix of it marked "..." (the value bound of logfmt.quote)."""
    return found == value or (found.endswith("...") and value.startswith(found[:-3]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    queue_id=WIRE_TEXT, client=WIRE_TEXT, sender=WIRE_TEXT, rcpts=st.lists(WIRE_TEXT, max_size=3),
    rule=WIRE_TEXT, text=WIRE_TEXT, monitor_rule=WIRE_TEXT, long=st.booleans(),
)  # fmt: skip
@example(queue_id="Q1", client="10.0.0.1", sender=FORGED_SENDER, rcpts=["a@b.c"], rule="-", text="x", monitor_rule="",
         long=False)  # fmt: skip
def test_whatever_the_wire_carries_the_decision_line_parses_to_our_fields(
    queue_id: str, client: str, sender: str, rcpts: list[str], rule: str, text: str, monitor_rule: str, long: bool
) -> None:
    if long:
        sender = sender * 20 + FORGED_SENDER  # past the value bound: cut, still quoted
    env = Envelope(client_ip=client, mail_from=sender, rcpts=rcpts, queue_id=queue_id, auth_user=text)
    tx = Transaction(envelope=env, ruleset=RuleSet("v1", {}))
    tx.body_bytes = 1234
    if monitor_rule:
        tx.hits.append(Verdict(Action.REJECT, "content", rule=monitor_rule, mode=Mode.MONITOR))
    verdict = Verdict(Action.REJECT, "content", rule=rule, code="550", enhanced="5.7.1", text=text)
    raw = decision.log_line(tx, verdict, 0.0021)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029" for c in raw), raw
    line = parse_dict(raw)
    keys = [*DECISION_KEYS, *(["hits", "monitor", "would"] if monitor_rule else []), "ms"]
    assert list(line) == keys
    wire = {
        "queue_id": queue_id or "-",
        "client": client or "-",
        "from": f"<{sender}>",
        "rcpts": ",".join(rcpts),
        "rule": rule or "-",
        "reply": verdict.smtp_reply(),
        **({"monitor": f"content/{monitor_rule}", "hits": f"content/{monitor_rule}:monitor"} if monitor_rule else {}),
    }
    for key, value in wire.items():
        assert _same_or_cut(line[key], value), (key, line[key], value)
    assert {k: v for k, v in line.items() if k not in wire} == {
        "auth": "yes" if text else "no",
        "action": "reject",
        "check": "content",
        "ruleset": "v1",
        "size": "1234",
        "ms": "2.1",
        "message_id": "-",
        **({"would": "reject"} if monitor_rule else {}),
    }
    assert len(raw) < 2000


def test_quote_writes_a_safe_token_bare_and_anything_else_quoted() -> None:
    assert logfmt.quote("a.b-c_d@x.vn") == "a.b-c_d@x.vn"
    assert logfmt.quote("<a@b.vn>") == "<a@b.vn>"
    assert logfmt.quote("") == '""'
    assert logfmt.quote("a b") == '"a b"'
    assert logfmt.quote("a=b") == '"a=b"'
    assert logfmt.quote('say "hi" \\o/') == '"say \\"hi\\" \\\\o/"'
    assert logfmt.quote("ngày") == '"ngày"'
    assert logfmt.quote("\r\n\x1b\u202e\udcff") == '"\\r\\n\\u001b\\u202e\\udcff"'
    assert logfmt.quote("x" * 10, limit=4) == "xxxx..."
    assert logfmt.quote("x y" * 10, limit=3) == '"x y..."'
    # the bound counts what is written: escapes make a value longer, and none is cut in two
    assert logfmt.quote("\x1b" * 100, limit=20) == '"' + "\\u001b" * 3 + '..."'
    assert logfmt.quote("a\x1b" * 100, limit=20) == '"' + "a\\u001b" * 2 + 'a..."'


def test_outbound_srs_and_attachment_name_with_control_characters(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ctx = TestCtx()
    sender = f"SRS0=abcd=XY=example.com=bob{FORGED}@bacninh.gov.vn"
    rc = drive(ctx, "mail.bacninh.gov.vn", sender, [f"partner{NASTY}@example.com"],
               [("From", "bob@example.com"), ("Subject", "x")], b"hello\r\n", ip="127.0.0.1")  # fmt: skip
    assert rc == Milter.REJECT  # an SRS forward by a local mailbox to the outside
    assert_one_line_each(caplog.records)
    for record in caplog.records:
        if record.name in ("govmilter.decision", "govmilter.forwarding"):
            clean_message(record)
    caplog.clear()
    ctx = TestCtx()
    rc = drive(ctx, "mail.bacninh.gov.vn", "officer@bacninh.gov.vn", ["partner@example.com"],
               [("From", "officer@bacninh.gov.vn"), *MULTIPART],
               multipart_body(f"hop dong{FORGED}.exe"), ip="127.0.0.1")  # fmt: skip
    assert rc == Milter.REJECT  # an executable attachment
    assert_one_line_each(caplog.records)
    decision = [r for r in caplog.records if r.name == "govmilter.decision"]
    assert len(decision) == 1
    clean_message(decision[0])


def test_an_exception_carrying_wire_data_stays_on_one_line(runtime: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    class Exploding(CheckHooks):
        name = "exploding"
        stages = frozenset({Stage.HEADERS})

        def run(self, stage: Stage, tx: Transaction) -> list[Verdict]:
            raise ValueError(f"cannot parse {tx.first_header('Subject')}")

    runtime.pipeline.__init__([*runtime.pipeline.checks, Exploding()], runtime.metrics)  # type: ignore[misc]
    caplog.set_level(logging.DEBUG)
    ctx = TestCtx()
    rc = drive(ctx, "h", "a@example.com", ["user@bacninh.gov.vn"], [("Subject", f"s{FORGED}")], b"x\r\n")
    assert rc == Milter.TEMPFAIL
    printed = assert_one_line_each(caplog.records)
    raised = [line for line in printed if "check=exploding stage=headers raised" in line]
    assert len(raised) == 1
    # the traceback is there, escaped, not lost
    assert "Traceback (most recent call last):\\n" in raised[0]
    assert "ValueError: cannot parse s\\r\\nqueue_id=FORGED" in raised[0]


def test_scan_of_hostile_messages_logs_one_line_each(caplog: pytest.LogCaptureFixture) -> None:
    harness = Harness(skip=SERVICE_CHECKS)
    caplog.set_level(logging.DEBUG)
    message = (
        f"From: <a{FORGED}@example.com>\r\nSubject: {NASTY}\r\nX-Forwarded-For: fwd\x1b@gmail.com dest@x\r\n".encode(
            "utf-8", "surrogateescape"
        )
        + b"Content-Type: multipart/mixed; boundary=b1\r\n\r\n"
        + multipart_body(f"\u202eexe.pdf{FORGED}")
    )
    for client, rcpts in (("127.0.0.2", ["user@bacninh.gov.vn"]), ("127.0.0.1", [f"p{NASTY}@example.com"])):
        result = harness.scan(message, mail_from=f"s{NASTY}@example.com", rcpts=rcpts, client_ip=client)
        assert result.verdict.action in (Action.ACCEPT, Action.REJECT)
    assert_one_line_each(caplog.records)
    assert [r for r in caplog.records if r.name == "govmilter.decision"]
    for record in caplog.records:
        if record.name in ("govmilter.decision", "govmilter.forwarding"):
            clean_message(record)


def test_the_daemon_log_handler_prints_one_line_per_record() -> None:
    """The handler `govmilter run` installs, in a fresh interpreter as the daemon has it."""
    script = (
        "import logging\n"
        "from govmilter.__main__ import _setup_logging\n"
        "_setup_logging('info')\n"
        "log = logging.getLogger('govmilter.test')\n"
        f"log.info('value=%s', {NASTY!r})\n"
        "try:\n"
        f"    raise ValueError({FORGED!r})\n"
        "except ValueError:\n"
        "    log.exception('it raised')\n"
        "log.warning('done')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.decode("utf-8", "backslashreplace").splitlines()
    assert len(lines) == 3, lines
    assert all(re.search(r" govmilter\[\d+\] (INFO|ERROR|WARNING) govmilter\.test: ", line) for line in lines), lines
    assert "value=x\\r\\nqueue_id=FORGED" in lines[0] and "\\x1b[31m\\x7f\\u2028\\udcff" in lines[0]
    assert "it raised\\nTraceback" in lines[1] and lines[1].endswith("action=accept\\r\\n")
    assert lines[2].endswith("govmilter.test: done")


def test_one_line_bounds_a_record() -> None:
    assert one_line("a\n" * 10, limit=8) == ("a\\n" * 10)[:8] + "...(cut)"
    out = one_line("x" * 100_000)
    assert len(out) <= 16384 + len("...(cut)") and out.endswith("...(cut)")


# ---- secrets ------------------------------------------------------------------------------------

SECRET = "s3cret-Pa55"


def test_redact_url() -> None:
    assert redact_url(f"redis://:{SECRET}@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redact_url(f"redis://govmilter:{SECRET}@10.0.0.5/2") == "redis://govmilter:***@10.0.0.5/2"
    assert redact_url(f"redis://10.0.0.5/0?password={SECRET}&db=1") == "redis://10.0.0.5/0?password=***&db=1"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert SECRET not in RedisStore(f"redis://:{SECRET}@127.0.0.1:1/0", timeout=0.2).url


@pytest.fixture(scope="module")
def redis_with_password(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed (Debian package redis-server, lab/install-deps.sh)")
    port = free_port()
    directory = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(directory),
         "--requirepass", "the-right-one"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64):
                        break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


INBOUND = b"From: a@example.com\r\nTo: user@bacninh.gov.vn\r\nMessage-ID: <m1@example.com>\r\nSubject: x\r\n\r\nhi\r\n"


@pytest.mark.parametrize("where", ["wrong-password", "nobody-listening"])
def test_a_redis_password_never_reaches_the_log(
    where: str, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    # only the wrong password needs a Redis server; nobody listening needs none
    port = request.getfixturevalue("redis_with_password") if where == "wrong-password" else free_port()
    url = f"redis://:{SECRET}@127.0.0.1:{port}/0"
    harness = Harness([f'forwarding.redis_url="{url}"', "forwarding.redis_timeout=1.0"], skip=SERVICE_CHECKS)
    caplog.set_level(logging.DEBUG)
    result = harness.scan(INBOUND, mail_from="a@example.com", rcpts=["user@bacninh.gov.vn"])
    assert result.verdict.action is Action.ACCEPT  # Redis failing never holds mail
    failures = [r for r in caplog.records if r.name == "govmilter.seen"]
    assert failures, "the store failure was not logged: the test did not reach Redis"
    for record in caplog.records:
        assert SECRET not in FORMATTER.format(record)


def test_a_bad_redis_url_error_does_not_print_the_password() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "govmilter", "scan", "--set", f'rules.dir="{RULES}"',
         *[arg for name in SERVICE_CHECKS for arg in ("--skip", name)],
         "--set", f'forwarding.redis_url="redis://:{SECRET}@127.0.0.1:notaport/0"',
         "--mail-from", "a@example.com", "--rcpt", "user@bacninh.gov.vn", "-"],
        input=INBOUND,
        capture_output=True,
        cwd=ROOT,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert b"redis_url" in result.stderr
    assert SECRET.encode() not in result.stderr + result.stdout


# ---- [log] format = "json", and the queue id on every line ---------------------------------------


def _decision_record(tx: Transaction, verdict: Verdict) -> logging.LogRecord:
    """The record decision.record() logs, as a handler receives it."""
    line = logfmt.Line(decision.log_pairs(tx, verdict, 0.0021))
    record = logging.LogRecord("govmilter.decision", logging.INFO, __file__, 1, "%s", (line,), None)
    record.fields = line
    return record


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(queue_id=WIRE_TEXT, sender=WIRE_TEXT, rcpts=st.lists(WIRE_TEXT, max_size=3), text=WIRE_TEXT,
       message_id=WIRE_TEXT, journal=st.booleans())  # fmt: skip
@example(queue_id="Q1", sender=FORGED_SENDER, rcpts=["a@b.c"], text=FORGED, message_id=NASTY, journal=False)
def test_whatever_the_wire_carries_a_json_decision_line_has_exactly_our_keys(
    queue_id: str, sender: str, rcpts: list[str], text: str, message_id: str, journal: bool
) -> None:
    env = Envelope(client_ip="10.0.0.9", mail_from=sender, rcpts=rcpts, queue_id=queue_id)
    tx = Transaction(envelope=env, ruleset=RuleSet("v1", {}))
    tx.add_header("Message-ID", message_id)
    verdict = Verdict(Action.REJECT, "content", rule="r1", code="550", enhanced="5.7.1", text=text)
    tx.hits.append(verdict)
    raw = logfmt.JsonFormatter(journal=journal).format(_decision_record(tx, verdict))
    if journal:
        assert raw.startswith("<6>")
        raw = raw[3:]
    assert raw.isascii() and "\n" not in raw and "\r" not in raw, raw  # every control and separator escaped
    line = json.loads(raw)
    keys = ["level", "logger", *DECISION_KEYS, "hits", "ms"]
    assert list(line) == ([] if journal else ["time", "pid"]) + keys
    assert line["from"] == f"<{sender}>"[:200] + ("..." if len(sender) + 2 > 200 else "")
    assert line["queue_id"] == (queue_id or "-")[:200] + ("..." if len(queue_id) > 200 else "")
    assert line["message_id"] == (message_id.strip() or "-")
    assert (line["action"], line["check"], line["rule"]) == ("reject", "content", "r1")


def test_json_lines_of_the_daemon_parse_whole_traceback_included() -> None:
    """`[log] format = "json"`: every line the daemon prints is one JSON object, a traceback too."""
    script = (
        "import logging\n"
        "from govmilter import logfmt\n"
        "from govmilter.__main__ import _setup_logging\n"
        "_setup_logging('info', 'json')\n"
        "log = logging.getLogger('govmilter.test')\n"
        "logfmt.bind('4XyZ1')\n"
        f"log.info('value=%s', {NASTY!r})\n"
        "try:\n"
        f"    raise ValueError({FORGED!r})\n"
        "except ValueError:\n"
        "    log.exception('it raised')\n"
        "logfmt.bind('')\n"
        "log.warning('done')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 3, lines
    first, second, third = (json.loads(line) for line in lines)
    assert first["queue_id"] == "4XyZ1" and first["message"] == f"value={NASTY}" and first["level"] == "info"
    assert second["queue_id"] == "4XyZ1" and "Traceback" in second["message"] and FORGED in second["message"]
    assert "queue_id" not in third and third["message"] == "done"


def test_every_line_of_a_transaction_carries_its_queue_id(runtime: Runtime) -> None:
    """The forwarding line, a check's exception, the decision: each joins Postfix's log by the queue id."""
    printed: list[str] = []
    handler = logging.Handler()  # prints as the daemon's handler does: in the thread that logs
    handler.addFilter(lambda record: record.name.startswith("govmilter"))
    handler.emit = lambda record: printed.append(FORMATTER.format(record))  # type: ignore[method-assign]
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:

        class Exploding(CheckHooks):
            name = "exploding"
            stages = frozenset({Stage.HEADERS})

            def run(self, stage: Stage, tx: Transaction) -> list[Verdict]:
                logging.getLogger("govmilter.test").warning("looking at %s", tx.first_header("Subject"))
                raise ValueError("a bug")

        runtime.pipeline.__init__([*runtime.pipeline.checks, Exploding()], runtime.metrics)  # type: ignore[misc]
        rc = drive(TestCtx(), "h", "a@example.com", ["user@bacninh.gov.vn"], [("Subject", "x")], b"x\r\n")
        assert rc == Milter.TEMPFAIL
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    assert len(printed) >= 3, printed
    for line in printed:
        message = line.split(": ", 1)[1]
        fields = message.split(" ", 1)[0]
        assert fields == 'queue_id="4ABC\\r\\nDEF"', line
    assert logfmt.bound() == ""  # released with the message


def test_one_escaping_function_per_destination() -> None:
    """text/escape.py: the same hostile value, made safe for each place it is written."""
    from govmilter.text import escape

    value = 'a\r\nqueue_id=FORGED "q" \\ 50% \x00\x1b[31m\u2028\u202e\udcff ngày'
    assert escape.log_value(value) == (
        '"a\\r\\nqueue_id=FORGED \\"q\\" \\\\ 50% \\u0000\\u001b[31m\\u2028\\u202e\\udcff ngày"'
    )
    assert escape.log_plain(value) == 'a??queue_id=FORGED "q" \\ 50% ??[31m?\u202e? ngày'
    assert escape.reply_text(value) == 'a  queue_id=FORGED "q" \\ 50    [31m    ng y'  # one space each
    folded = "gw; spf=pass;\n\tdkim=pass\r\nX-Injected: 1"  # a fold stays a fold; a line break does not
    assert escape.header_value(folded) == "gw; spf=pass;\n dkim=pass  X-Injected: 1"
    assert escape.reply_token("Win.Test.EICAR_HDB-1 %x\r\n") == "Win.Test.EICAR_HDB-1__x__"
    assert escape.reply_token("") == "unknown"
    # the record keeps what was sent; only what UTF-8 and PostgreSQL text cannot hold is escaped
    assert escape.record_text(value) == 'a\r\nqueue_id=FORGED "q" \\ 50% \\x00\x1b[31m\u2028\u202e\\xff ngày'
    assert escape.record_text("x" * 20, limit=5) == "xxxxx..."
    # a terminal never receives a control or format character
    shown = escape.terminal_text(escape.record_text(value))
    assert shown == 'a\\r\\nqueue_id=FORGED "q" \\ 50% \\x00\\x1b[31m\\u2028\\u202e\\xff ngày'
    assert not any(unsafe(c) or c == "\u202e" for c in shown)
