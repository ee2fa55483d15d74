"""Spam and the regulation's content rules through real Postfix, dnsmasq and the running daemon.

The stack's dnsmasq lists 127.0.0.2 in zen.spamhaus.org and dbltest.com in dbl.spamhaus.org
(RFC 5782 test points). The rule-file tests edit the stack's rule directory while mail flows
and put it back afterwards.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.helpers import INTERNET_CLIENT, LISTED_CLIENT, TRUSTED_RELAY, message, unique
from govmilter.__main__ import main as govmilter_main
from stack import Reply, Stack, wait_until

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def encoded(subject: str) -> str:
    return f"=?UTF-8?B?{base64.b64encode(subject.encode()).decode()}?="


def counter(stack: Stack, name: str, **labels: str) -> float:
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    match = re.search(rf"^{name}\{{{re.escape(wanted)}\}} ([0-9.e+]+)$", stack.scrape(), re.M)
    return float(match.group(1)) if match else 0.0


def ruleset_version(stack: Stack) -> str:
    match = re.search(r'govmilter_ruleset_info\{version="([^"]+)"\} 1', stack.scrape())
    return match.group(1) if match else ""


# ---- decisions ---------------------------------------------------------------------------------


def test_client_listed_by_the_ip_blocklist_is_refused(stack: Stack) -> None:
    data = message(unique("listed"))
    reply = stack.send("sender@example.com", ["user@bacninh.gov.vn"], data, source_ip=LISTED_CLIENT)
    assert (reply.stage, reply.code) == ("mail", 550), reply
    assert "5.7.1" in reply.text and "127.0.0.2" in reply.text and "zen.spamhaus.org" in reply.text


def test_gtube_is_refused(stack: Stack) -> None:
    before = counter(stack, "govmilter_rule_hits_total", check="content", mode="enforce", rule="gtube")
    data = message(unique("gtube"), GTUBE + "\r\n")
    reply = stack.send("sender@example.com", ["user@bacninh.gov.vn"], data, source_ip=INTERNET_CLIENT)
    assert (reply.stage, reply.code) == ("data", 550), reply
    assert "5.7.1" in reply.text and "refused as spam" in reply.text
    assert "gtube" not in reply.text  # rule ids are internal: an outside sender does not read them
    assert counter(stack, "govmilter_rule_hits_total", check="content", mode="enforce", rule="gtube") == before + 1


@pytest.mark.parametrize("subject", [encoded("[TỐI MẬT] Kế hoạch"), "[TỐI MẬT] Kế hoạch"], ids=["rfc2047", "utf8"])
def test_outbound_message_marked_toi_mat_is_refused(stack: Stack, subject: str) -> None:
    data = message(subject, "Gui anh ke hoach.\r\n", mail_from="a.nguyen@bacninh.gov.vn", to="partner@example.com")
    reply = stack.send("a.nguyen@bacninh.gov.vn", ["partner@example.com"], data, source_ip=TRUSTED_RELAY)
    assert (reply.stage, reply.code) == ("data", 550), reply
    assert "5.7.1" in reply.text and "Dieu 6.1" in reply.text


def test_outbound_password_notice_is_not_a_marking(stack: Stack) -> None:
    marker = unique("password")
    data = message(
        encoded("HƯỚNG DẪN ĐỔI MẬT KHẨU ") + " " + marker,
        "MẬT KHẨU MỚI:\r\n- từ 8 ký tự.\r\nChính sách BẢO MẬT.\r\n",
        mail_from="cntt@bacninh.gov.vn",
        to="partner@example.com",
    )
    reply = stack.send("cntt@bacninh.gov.vn", ["partner@example.com"], data, source_ip=TRUSTED_RELAY)
    assert reply.accepted, reply
    assert stack.sink.find(marker).message["X-Spam-Score"] == "0.0"


def test_clean_message_passes_with_its_score_header(stack: Stack) -> None:
    subject = unique("clean-spam")
    reply = stack.send("sender@example.com", ["user@bacninh.gov.vn"], message(subject), source_ip=INTERNET_CLIENT)
    assert reply.accepted, reply
    delivered = stack.sink.find(subject).message
    assert delivered["X-Spam-Score"] == "0.0"
    assert delivered["X-Spam-Flag"] is None
    assert f"ruleset={ruleset_version(stack)}" in delivered["X-Govmilter"]


def test_listed_sender_domain_is_tagged(stack: Stack) -> None:
    subject = unique("rhsbl")
    data = message(subject, mail_from="news@dbltest.com")
    reply = stack.send("news@dbltest.com", ["user@bacninh.gov.vn"], data, source_ip=INTERNET_CLIENT)
    assert reply.accepted, reply
    delivered = stack.sink.find(subject).message
    assert delivered["X-Spam-Flag"] == "YES" and delivered["X-Spam-Score"] == "6.0"
    assert "dnsbl/spamhaus-dbl-sender=6" in delivered["X-Spam-Report"]


def test_registration_mail_is_delivered_tagged(stack: Stack) -> None:
    subject = unique("facebook")
    data = message(encoded("Xác nhận tài khoản ") + " " + subject, mail_from="security@facebookmail.com")
    reply = stack.send("bounce@facebookmail.com", ["user@bacninh.gov.vn"], data, source_ip=INTERNET_CLIENT)
    assert reply.accepted, reply
    tags = stack.sink.find(subject).message.get_all("X-Govmilter-Monitor")
    assert "check=content rule=registration-social-sender would=reject" in tags
    assert "check=content rule=registration-confirmation would=reject" in tags


# ---- officers edit the rules while mail flows ----------------------------------------------------

LIVE_RULE = """
[[rule]]
id = "live-added"
description = "added while the gateway runs"
target = "header"
header = "Subject"
pattern = "{token}"
action = "reject"
"""


class Traffic:
    """Clean messages sent one after another until stopped; every reply kept."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.replies: list[Reply] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            data = message(unique("flow"))
            self.replies.append(
                self.stack.send("sender@example.com", ["user@bacninh.gov.vn"], data, source_ip=INTERNET_CLIENT)
            )

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)


@pytest.fixture
def spam_rules(stack: Stack) -> Iterator[Path]:
    """The stack's content-spam.toml, put back as it was after the test."""
    path = stack.rules_dir / "content-spam.toml"
    original = path.read_text(encoding="utf-8")
    try:
        yield path
    finally:
        if path.read_text(encoding="utf-8") != original:
            changed = ruleset_version(stack)
            path.write_text(original, encoding="utf-8")
            wait_until(lambda: ruleset_version(stack) not in ("", changed), 30, "rule reload back")


def test_rule_edited_while_mail_flows(stack: Stack, spam_rules: Path) -> None:
    token = unique("livetoken").replace("-", "")
    original = spam_rules.read_text(encoding="utf-8")
    version = ruleset_version(stack)
    failed_before = counter(stack, "govmilter_rule_reloads_total", outcome="failed")
    with Traffic(stack) as traffic:
        wait_until(lambda: len(traffic.replies) >= 3, 60, "traffic")

        # an officer adds a rule: refused within a few seconds, nothing in flight disturbed
        spam_rules.write_text(original + LIVE_RULE.format(token=token), encoding="utf-8")
        written = time.monotonic()
        probe: list[Reply] = []

        def refused() -> bool:
            reply = stack.send("sender@example.com", ["user@bacninh.gov.vn"], message(f"offer {token}"),
                               source_ip=INTERNET_CLIENT)
            probe.append(reply)
            return reply.code == 550

        wait_until(refused, 30, "the added rule")
        took = time.monotonic() - written
        print(f"added rule effective after {took:.2f}s ({len(probe)} probes)")
        assert "content rule live-added" in probe[-1].text
        assert all(r.accepted or r.code == 550 for r in probe), probe
        # the metric follows the swap (a probe can be judged by the new set a moment before)
        wait_until(lambda: ruleset_version(stack) not in ("", version), 10, "the new version on /metrics")
        added_version = ruleset_version(stack)

        # then a broken regular expression: the old rules stay, the failure is logged and counted
        broken = original + LIVE_RULE.format(token=token) + LIVE_RULE.replace("live-added", "live-broken").format(
            token="(unclosed"
        )
        spam_rules.write_text(broken, encoding="utf-8")
        failed = lambda: counter(stack, "govmilter_rule_reloads_total", outcome="failed")  # noqa: E731
        wait_until(lambda: failed() > failed_before, 30, "failed reload")
        reply = stack.send("sender@example.com", ["user@bacninh.gov.vn"], message(f"again {token}"),
                           source_ip=INTERNET_CLIENT)
        assert reply.code == 550 and "content rule live-added" in reply.text, reply  # the previous set still decides
        assert ruleset_version(stack) == added_version
        wait_until(lambda: len(traffic.replies) >= 10, 60, "more traffic")
    assert traffic.replies and all(r.accepted for r in traffic.replies), [r for r in traffic.replies if not r.accepted]

    line = next(n for n, text in enumerate(broken.splitlines(), 1) if "(unclosed" in text)
    log = stack.govmilter.log_path.read_text(errors="replace")
    assert f"{spam_rules}:{line}: live-broken: pattern is not a valid regular expression" in log
    assert "reload=failed" in log
    assert govmilter_main(["rules", "check", str(stack.rules_dir)]) == 1


# ---- markings written to slip past the rules, and all the text (issue 14) ------------------------

FILLER_LINE = "Bao cao tinh hinh su dung hop thu cong vu thang 3, mat khau doi dinh ky 90 ngay.\r\n"
BIG_FILLER = FILLER_LINE * (1_572_864 // len(FILLER_LINE) + 1)  # a little over 1.5 MiB


def outbound(data: bytes, stack: Stack) -> Reply:
    return stack.send("a.nguyen@bacninh.gov.vn", ["partner@example.com"], data, source_ip=TRUSTED_RELAY)


def with_attachment(subject: str, name: str, kind: str, payload: bytes) -> bytes:
    encoded = base64.encodebytes(payload).decode().replace("\n", "\r\n")
    return (
        f"From: <a.nguyen@bacninh.gov.vn>\r\nTo: <partner@example.com>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{unique()}@test.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n'
        "Gui anh tai lieu.\r\n"
        f'--b\r\nContent-Type: {kind}\r\nContent-Disposition: attachment; filename="{name}"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{encoded}--b--\r\n"
    ).encode()


def marking_docx() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    ns = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr(
            "word/document.xml",
            f"<w:document {ns}><w:body><w:p><w:r><w:t>Kế hoạch</w:t></w:r></w:p>"
            "<w:p><w:r><w:t>TỐ</w:t></w:r><w:r><w:t>I MẬT</w:t></w:r></w:p></w:body></w:document>",
        )
    return buffer.getvalue()


def marking_pdf() -> bytes:
    from checks.content.test_documents import MARKED_PDF

    return MARKED_PDF


@pytest.mark.parametrize(
    "body",
    [
        "Kem theo ke hoach TỐI\u00a0MẬT so 5.\r\n",
        "Kem theo ke hoach ТỐІ МẬТ so 5.\r\n",  # Cyrillic Т, І, М
        BIG_FILLER + "Kem theo ke hoach TUYỆT MẬT.\r\n",
    ],
    ids=["nbsp", "cyrillic", "after-1.5MiB"],
)
def test_outbound_marking_evasions_are_refused(stack: Stack, body: str) -> None:
    data = message(unique("evasion"), body, mail_from="a.nguyen@bacninh.gov.vn", to="partner@example.com")
    reply = outbound(data, stack)
    assert (reply.stage, reply.code) == ("data", 550), reply
    assert "Dieu 6.1" in reply.text


@pytest.mark.parametrize(
    ("name", "kind", "make"),
    [("ke-hoach.docx", "application/octet-stream", marking_docx), ("van-ban.pdf", "application/pdf", marking_pdf)],
    ids=["docx", "pdf"],
)
def test_outbound_marking_only_in_a_document_is_refused(stack: Stack, name: str, kind: str, make: object) -> None:
    assert callable(make)
    reply = outbound(with_attachment(unique("document"), name, kind, make()), stack)
    assert (reply.stage, reply.code) == ("data", 550), reply
    assert "Dieu 6.1" in reply.text


def test_gtube_after_one_and_a_half_mebibytes_is_refused(stack: Stack) -> None:
    data = message(unique("gtube-late"), BIG_FILLER + GTUBE + "\r\n")
    reply = stack.send("sender@example.com", ["user@bacninh.gov.vn"], data, source_ip=INTERNET_CLIENT)
    assert (reply.stage, reply.code) == ("data", 550), reply
    assert "refused as spam" in reply.text  # only GTUBE scores: the filler is plain text


def test_must_pass_sentences_are_delivered(stack: Stack) -> None:
    from checks.content.test_content_evasions import MUST_PASS

    marker = unique("must-pass")
    body = "\r\n".join(MUST_PASS) + "\r\n"
    data = message(encoded("HƯỚNG DẪN BẢO MẬT ") + " " + marker, body, mail_from="cntt@bacninh.gov.vn",
                   to="partner@example.com")
    reply = stack.send("cntt@bacninh.gov.vn", ["partner@example.com"], data, source_ip=TRUSTED_RELAY)
    assert reply.accepted, reply
    assert stack.sink.find(marker).message["X-Spam-Score"] == "0.0"
