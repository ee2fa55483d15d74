"""govmilter's MIME walk against Python's email package, on the same generated messages.

The trees are test_fuzz's (random boundaries, nesting, message/rfc822 and digests,
base64 / quoted-printable / 7bit / 8bit / binary, charsets, RFC 2231 and RFC 2047 file
names). For each message, whatever the chunking, the walk must see what the email package
sees: the same leaf parts in the same order, each with the same content type, file name and
decoded size, and the same decoded text for body-text leaves.

Where the two legitimately differ, the comparison says so and compares what must agree:

1. File names written as RFC 2047 encoded words inside a quoted parameter
   (filename="=?UTF-8?B?...?="): RFC 2047 section 5 forbids them; govmilter decodes them,
   as Outlook and Thunderbird do, and so does email with policy.default (its header
   registry), while compat32 returns the encoded word. The comparison uses policy.default
   and decodes any encoded word left, so that either way the decoded names are compared.
2. A charset label Python has no text codec for ("x-unknown-charset", "base64"), or none
   at all: email's get_content() raises LookupError or reads ASCII; govmilter reads UTF-8
   with replacement (mime.headers.text_codec). For those leaves the text is compared with
   email's decoded payload bytes read as UTF-8 with replacement; for every known charset,
   with email's own get_content().
3. What counts toward the attachment cap (is_attachment, attachment_bytes, the header bytes
   of attached messages) is govmilter's policy, not something email has a notion of: it is
   checked by test_fuzz, not here.
4. Samples (a part's head, a zip's directory) are govmilter's; email holds whole payloads.
5. A Content-Transfer-Encoding value folded onto the next line ("Content-Transfer-Encoding:"
   CRLF TAB "base64"): email's get_payload(decode=True) compares the unfolded value without
   stripping its leading white space, so it does not decode the part at all (CPython's
   Message.get_payload); mail clients, and govmilter, read "base64". The comparison strips the
   value in email's copy first.

Runs derandomized with a bounded number of examples (GOVMILTER_WALK_EXAMPLES, default 150).
"""

from __future__ import annotations

import email
import email.policy
import os
import re
from email.header import decode_header, make_header
from email.message import Message

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from govmilter.mime import walk
from govmilter.mime.headers import text_codec
from test_fuzz import TREES, Leaf, Multi, Wrapped, chunks, message_of

EXAMPLES = int(os.environ.get("GOVMILTER_WALK_EXAMPLES", "150"))
SAME = settings(
    max_examples=EXAMPLES,
    derandomize=True,  # a fixed seed: the same examples on every run and machine
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    database=None,
)
TEXT_TYPES = ("text/plain", "text/html")


def email_leaves(data: bytes) -> list[Message]:
    """The leaf parts as email sees them: every part that is not a multipart nor a message/rfc822."""
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    leaves = [part for part in parsed.walk() if not part.is_multipart()]
    for part in leaves:
        cte = str(part.get("content-transfer-encoding", ""))
        if cte != cte.strip():  # difference 5
            part.replace_header("content-transfer-encoding", cte.strip())
    return leaves


def email_filename(part: Message) -> str:
    name = part.get_filename() or ""
    if "=?" in name:  # difference 1: an encoded word inside a quoted parameter
        name = str(make_header(decode_header(name)))
    return name


def email_text(part: Message) -> str:
    """The decoded text a reader sees; difference 2 for charsets Python cannot read."""
    charset = part.get_content_charset() or ""
    if text_codec(charset) and part.get_content_maintype() == "text":
        return str(part.get_content())
    if text_codec(charset):  # an attached page of another type (image/svg+xml): its bytes in its charset
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        return payload.decode(text_codec(charset), "replace")
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode("utf-8", "replace")


def keeps_text(part: Message) -> bool:
    return part.get_content_type() in TEXT_TYPES and part.get_content_disposition() != "attachment"


PAGE_TYPES = ("text/html", "application/xhtml+xml", "image/svg+xml")
PAGE_NAMES = (".htm", ".html", ".shtml", ".xhtml", ".svg")


def attached_page(part: Message) -> bool:
    """An attached web page, read as HTML text as well (phishing links move into invoice.html)."""
    name = email_filename(part).lower().rstrip(". ")
    return not keeps_text(part) and (part.get_content_type() in PAGE_TYPES or name.endswith(PAGE_NAMES))


def compare(data: bytes, size: int) -> None:
    expected = email_leaves(data)
    facts = walk(chunks(data, size))
    try:
        got = list(facts.parts)
        assert [p.content_type for p in got] == [e.get_content_type() for e in expected]
        for part, other in zip(got, expected, strict=True):
            payload = other.get_payload(decode=True)
            assert isinstance(payload, bytes)
            assert part.decoded_size == len(payload), (part.path, part.content_type)
            assert part.filename == email_filename(other), part.path
        texts = [("text/html" if attached_page(e) else e.get_content_type(), email_text(e))
                 for e in expected if keeps_text(e) or attached_page(e)]  # fmt: skip
        texts = [(kind, text) for kind, text in texts if text]  # the walk keeps no empty text
        assert [(t.content_type, t.text) for t in facts.texts] == texts
    finally:
        close = getattr(facts, "close", None)
        if close is not None:
            close()


def compat32_types(data: bytes) -> list[str]:
    parsed = email.message_from_bytes(data, policy=email.policy.compat32)
    return [part.get_content_type() for part in parsed.walk() if not part.is_multipart()]


@SAME
@given(TREES, st.integers(min_value=1, max_value=4096))
@example(Leaf("text/plain", "Tối mật\r\n".encode(), "quoted-printable", "", "", "", "utf-8", "Tối mật\r\n"), 1)
@example(
    Multi(
        "digest",
        "=_d",
        [
            Wrapped(Leaf("text/html", b"<p>x</p>", "base64", "", "", "", "utf-8", "<p>x</p>")),
            Leaf(
                "application/pdf", b"%PDF-1.4\r\n" + bytes(300), "base64", "h\u1ed3 s\u01a1.pdf", "2231", "attachment"
            ),
        ],
    ),
    7,
)
def test_walk_sees_what_email_sees(tree: Leaf | Multi | Wrapped, size: int) -> None:
    data, _ = message_of(tree)
    assert compat32_types(data) == [p.get_content_type() for p in email_leaves(data)]  # both policies agree
    compare(data, size)
    compare(data, len(data) + 1)  # one chunk


MIME_FIELD = re.compile(rb"(?m)^(Content-(?:Type|Transfer-Encoding|Disposition)):[ \t]*")
SPELLINGS = {
    "lower": lambda name: name.lower(),
    "upper": lambda name: name.upper(),
    "mixed": lambda name: bytes(c ^ 0x20 if i % 2 and chr(c).isalpha() else c for i, c in enumerate(name)),
}


@SAME
@given(TREES, st.sampled_from(sorted(SPELLINGS)), st.booleans(), st.integers(min_value=1, max_value=512))
def test_header_spelling_is_read_alike(tree: Leaf | Multi | Wrapped, spelling: str, fold: bool, size: int) -> None:
    """Field names in any case, values folded onto the next line: both readers see the same parts.

    Only the MIME fields are respelled; the generated bodies never hold a line that starts
    with one of those names (no ':' in generated text, none in base64).
    """
    data, _ = message_of(tree)
    respell = SPELLINGS[spelling]
    data = MIME_FIELD.sub(lambda m: respell(m.group(1)) + (b":\r\n\t" if fold else b": "), data)
    compare(data, size)


@SAME
@given(TREES, st.lists(st.integers(min_value=1, max_value=200), min_size=1, max_size=30))
def test_any_cut_of_the_bytes_walks_the_same(tree: Leaf | Multi | Wrapped, cuts: list[int]) -> None:
    """Chunks of uneven sizes (a CR and its LF, a boundary's dashes, a QP '=' cut apart)."""
    data, _ = message_of(tree)
    pieces = []
    at = 0
    for cut in cuts:
        pieces.append(data[at : at + cut])
        at += cut
    pieces.append(data[at:])
    one = walk([data])
    many = walk(pieces)
    try:
        assert many == one
    finally:
        for facts in (one, many):
            close = getattr(facts, "close", None)
            if close is not None:
                close()
