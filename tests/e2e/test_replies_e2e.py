"""What a refused sender's SMTP client receives through real Postfix: reference, contact, line bounds.

The reference must be the queue id Postfix logged for the refusal (the helpdesk joins the two
logs with it); before Postfix has a queue id (at MAIL FROM, "NOQUEUE" in its log) the reference
is ours and the decision log line carries it. A long filled-in reply reaches the client as
several lines, each within RFC 5321's 512 octets, nothing of it lost.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import pytest

from e2e.helpers import INTERNET_CLIENT, LISTED_CLIENT, message, unique
from stack import Stack, wait_until

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
CONTACT = "Lien he / contact: Trung tam CNTT tinh, 0222 3822 000, hotro@bacninh.gov.vn"
LONG_TEXT = "Tep dinh kem bi chan - attachment refused: {name}. " + "Giai thich / explanation " * 16 + "{name} end"


@pytest.fixture(scope="module")
def contact_stack(stack: Stack) -> Iterator[Stack]:
    before = dict(stack.govmilter.settings)
    stack.restart_milter(**{"milter.reply_contact": f'"{CONTACT}"', "attachments.reply_text": f'"{LONG_TEXT}"'})
    yield stack
    stack.govmilter.settings.clear()
    stack.govmilter.settings.update(before)
    stack.restart_milter()


def raw_transaction(stack: Stack, source_ip: str, data: bytes) -> list[bytes]:
    """The lines of the reply to the end of DATA, as they came over the wire (CRLF included)."""
    with socket.create_connection(("127.0.0.1", stack.smtp_port), timeout=60, source_address=(source_ip, 0)) as sock:
        stream = sock.makefile("rb")

        def reply() -> list[bytes]:
            lines = [stream.readline()]
            while lines[-1][3:4] == b"-":
                lines.append(stream.readline())
            return lines

        reply()
        for command in (b"EHLO c.example", b"MAIL FROM:<a@example.com>", b"RCPT TO:<user@bacninh.gov.vn>", b"DATA"):
            sock.sendall(command + b"\r\n")
            reply()
        sock.sendall(data.replace(b"\r\n.", b"\r\n..") + b"\r\n.\r\n")
        lines = reply()
        sock.sendall(b"QUIT\r\n")
        return lines


def postfix_log_lines(stack: Stack, needle: str) -> list[str]:
    log = (stack.root / "postfix" / "postfix.log").read_text(errors="replace")
    return [line for line in log.splitlines() if needle in line]


def test_a_refusal_names_the_queue_id_postfix_logged_and_the_contact(contact_stack: Stack) -> None:
    marker = unique("ref")
    data = message(marker, GTUBE + "\r\n")
    reply = contact_stack.send("sender@example.com", ["user@bacninh.gov.vn"], data, source_ip=INTERNET_CLIENT)
    assert (reply.stage, reply.code) == ("data", 550), reply
    text, ref_line, contact = reply.text.split("\n")
    assert text.startswith("5.7.1 Thu bi tu choi vi bi bo loc danh gia la thu rac") and "gtube" not in text
    ref = re.match(r"5\.7\.1 Ma tham chieu / reference: (\w+) ", ref_line)
    assert ref, ref_line
    assert contact == f"5.7.1 {CONTACT}"
    needle = f"reference: {ref.group(1)}"
    wait_until(lambda: bool(postfix_log_lines(contact_stack, needle)), 10, "Postfix's log of the refusal")
    logged = postfix_log_lines(contact_stack, needle)[0]
    assert f" {ref.group(1)}: milter-reject: END-OF-MESSAGE" in logged, logged  # the queue id Postfix logged


def test_a_refusal_at_mail_from_gets_our_own_reference_in_the_decision_line(contact_stack: Stack) -> None:
    reply = contact_stack.send("sender@example.com", ["user@bacninh.gov.vn"], message(unique("noq")),
                               source_ip=LISTED_CLIENT)  # fmt: skip
    assert (reply.stage, reply.code) == ("mail", 550), reply
    ref = re.search(r"reference: (NOQUEUE-[B-Z2-9]{8}) ", reply.text)
    assert ref, reply.text
    assert reply.text.endswith(CONTACT)
    logged = contact_stack.govmilter.log_path
    wait_until(lambda: f"queue_id={ref.group(1)}" in logged.read_text(), 10, "the decision line with our reference")


def test_a_long_reply_arrives_as_lines_within_the_smtp_bound(contact_stack: Stack) -> None:
    name = "bao-cao-quy-" + "ke-hoach-" * 6 + "x.exe"  # the reply shows at most 80 characters of it
    data = (
        "From: <a@example.com>\r\nTo: <user@bacninh.gov.vn>\r\nSubject: long\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nXin chao.\r\n'
        f'--b\r\nContent-Type: application/octet-stream; name="{name}"\r\n'
        f'Content-Disposition: attachment; filename="{name}"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        "TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAgAAAAA==\r\n--b--\r\n"
    ).encode()
    lines = raw_transaction(contact_stack, INTERNET_CLIENT, data)
    assert len(lines) >= 4, lines  # the text cut in two or more, the reference, the contact
    assert all(len(line) <= 512 and line.endswith(b"\r\n") for line in lines), [len(line) for line in lines]
    assert [line[:4] for line in lines] == [b"550-"] * (len(lines) - 1) + [b"550 "]
    words = b" ".join(line[10:].rstrip(b"\r\n") for line in lines[:-2]).decode()
    assert words == " ".join(LONG_TEXT.format(name=name[:80]).split())  # nothing lost at the cuts
    assert lines[-1].rstrip(b"\r\n").endswith(CONTACT.encode())
