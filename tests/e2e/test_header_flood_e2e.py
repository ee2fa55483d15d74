"""A header flood through real Postfix: what hides behind 2 500 filler fields still reaches the checks.

The adapter used to keep the first 2 000 fields and rebuild the message for the MIME
walk and clamd from them: a Content-Type after the flood was invisible, and a
multipart message with EICAR attached was delivered as a plain text one. Every field
now goes to the spool as it arrives, so clamd sees the attachment (and the size
check may refuse the flood itself): the message must not be delivered.
"""

from __future__ import annotations

import base64

from e2e.helpers import INTERNET_CLIENT, unique
from stack import Stack
from support.header_flood import BOUNDARY, filler, message_bytes, multipart_fields
from support.lab_clamd import EICAR


def eicar_behind_a_flood(subject: str, fields: int = 2500) -> bytes:
    body = (
        f"--{BOUNDARY}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nXin xem tep dinh kem.\r\n".encode()
        + f'--{BOUNDARY}\r\nContent-Type: text/plain; name="ghichu.txt"\r\n'.encode()
        + b'Content-Disposition: attachment; filename="ghichu.txt"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        + base64.encodebytes(EICAR).replace(b"\n", b"\r\n")
        + f"--{BOUNDARY}--\r\n".encode()
    )
    head = [("From", "<partner@example.com>"), ("To", "<user@bacninh.gov.vn>"),
            ("Message-ID", f"<{subject}@example.com>"), *filler(fields), *multipart_fields(subject)]  # fmt: skip
    return message_bytes(head, body)


def test_eicar_behind_2500_header_fields_is_not_delivered(stack: Stack) -> None:
    subject = unique("flood")
    reply = stack.send("partner@example.com", ["user@bacninh.gov.vn"], eicar_behind_a_flood(subject),
                       source_ip=INTERNET_CLIENT)  # fmt: skip
    assert not reply.accepted, reply
    # refused for good (clamd's virus or the header-flood policy), not a tempfail of ours
    assert reply.stage == "data" and 500 <= reply.code < 600, reply
    # and nothing reached the mailbox
    assert not [item for item in stack.sink.messages if subject.encode() in item.data]


def test_the_same_message_without_the_flood_is_refused_the_same_way(stack: Stack) -> None:
    # the control: what makes the flooded message undeliverable is its content, seen whole
    subject = unique("noflood")
    reply = stack.send("partner@example.com", ["user@bacninh.gov.vn"], eicar_behind_a_flood(subject, fields=0),
                       source_ip=INTERNET_CLIENT)  # fmt: skip
    assert (reply.stage, reply.code) == ("data", 554), reply
