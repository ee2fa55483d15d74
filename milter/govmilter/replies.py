"""The SMTP reply a refused sender reads: the verdict's text, a reference, the contact line.

The reference is what a sender quotes to the helpdesk, who finds the decision with it: the
Postfix queue id (the decision log line's queue_id, joined to Postfix's own log). A refusal
before Postfix created the queue file (at MAIL FROM Postfix logs "NOQUEUE") gets a reference of
our own, NOQUEUE-XXXXXXXX, written as the transaction's queue id so the log line carries it too.

RFC 5321 4.5.3.1.5 bounds a reply line at 512 octets with its code and CRLF; libmilter takes at
most 32 lines. The text stays one line when it fits (LINE characters, far below 512 with
"550-5.7.520 " in front), else it is cut at spaces into several lines; the reference and the
contact each take a line of their own, so they never push the text past the bound.
"""

from __future__ import annotations

import secrets
import textwrap

from govmilter.model import Transaction

LINE = 400  # characters of text per reply line (+ "550-5.7.520 " + CRLF < 512)
TEXT_LINES = 8  # lines of text at most, however long a filled-in text grows (libmilter's bound: 32 in all)
CONTACT_LINES = 2
_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ23456789"  # no vowels (no words), no 0/O or 1/I to misread


def reference(tx: Transaction | None) -> str:
    """The reference of a transaction's refusal: its queue id, given one of our own when Postfix had none."""
    if tx is None:
        return ""
    if not tx.envelope.queue_id:
        tx.envelope.queue_id = "NOQUEUE-" + "".join(secrets.choice(_ALPHABET) for _ in range(8))
    return tx.envelope.queue_id


def reference_line(ref: str) -> str:
    return f"Ma tham chieu / reference: {ref} (bao ma nay khi lien he bo phan ho tro - quote it to the helpdesk)"


def reply_lines(text: str, ref: str, contact: str = "") -> list[str]:
    """The lines of the reply: the text (cut at spaces past LINE), the reference, the contact line."""
    lines = _wrap(text, TEXT_LINES)
    if ref:
        lines.append(reference_line(ref))
    return lines + _wrap(contact, CONTACT_LINES)


def _wrap(text: str, most: int) -> list[str]:
    text = " ".join(text.split())
    if len(text) <= LINE:
        return [text] if text else []
    lines = textwrap.wrap(text, LINE, break_long_words=True, break_on_hyphens=False)
    if len(lines) > most:
        lines = [*lines[: most - 1], lines[most - 1][: LINE - 3] + "..."]
    return lines
