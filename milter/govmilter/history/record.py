"""The decision record: everything about one message's decision, built once, at its answer.

One record per message, from the transaction and the final verdict: the log line is written
from it (decision.py), the history store keeps it (store.py), `govmilter trace` reads it back.
It holds metadata, never a body. Every value from the wire passes through
text.escape.record_text: bounded, storable, otherwise what was sent.
"""

from __future__ import annotations

import email.header
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from govmilter.model import Action, Mode, Transaction, Verdict
from govmilter.text.escape import record_text

SUBJECT_LIMIT = 300  # characters of the decoded Subject kept
ADDRESS_LIMIT = 320  # an address (RFC 5321: 64 + 1 + 255)
MAX_RCPTS = 100  # recipients kept per record (Postfix's smtpd_recipient_limit is 1000: the rest counted)
MAX_ATTACHMENTS = 50
MAX_HITS = 100
REPLY_LIMIT = 600
NODE = socket.gethostname()

_FOLD = re.compile(r"\r?\n(?=[ \t])")
_REFUSALS = (Action.REJECT, Action.TEMPFAIL, Action.DISCARD)


@dataclass
class Hit:
    check: str
    rule: str
    mode: str  # enforce | monitor
    action: str  # continue (a recorded finding, a score) | reject | tempfail | ...
    score: float = 0.0
    reason: str = ""
    reply: str = ""  # the reply it gives (enforce) or would have given (monitor)


@dataclass
class Attachment:
    name: str
    declared: str  # the Content-Type the sender declared
    size: int  # decoded bytes
    true_type: str = ""  # the type its content shows, when a check recorded it


@dataclass
class DecisionRecord:
    time: float  # Unix time of the answer
    node: str
    queue_id: str
    message_id: str
    subject: str
    mail_from: str
    rcpts: list[str]
    from_header: str
    client_ip: str
    client_name: str
    direction: str  # inbound | outbound
    direction_why: str  # trusted relay | authenticated | other client
    authenticated: bool
    size: int
    action: str  # the final action: accept | reject | tempfail | discard
    check: str  # the check that decided ("" when accepted)
    rule: str
    reply: str  # the SMTP reply the sender saw ("" for an accept)
    ruleset: str
    score: float = 0.0  # the content score enforced
    would_score: float | None = None  # the score with every monitored rule enforced
    would: str = ""  # what monitor mode let through: the first monitored refusal's action
    elapsed_ms: float | None = None
    hits: list[Hit] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    durations_ms: dict[str, float] = field(default_factory=dict)
    rcpts_total: int = 0  # recipients of the message (rcpts keeps the first MAX_RCPTS)

    def as_json(self) -> dict[str, Any]:
        """The record as plain values (dataclasses.asdict's deep copy costs 60 us a record)."""
        data = dict(self.__dict__)
        data["rcpts"] = list(self.rcpts)
        data["hits"] = [dict(hit.__dict__) for hit in self.hits]
        data["attachments"] = [dict(item.__dict__) for item in self.attachments]
        data["durations_ms"] = dict(self.durations_ms)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DecisionRecord:
        values = dict(data)
        values["hits"] = [Hit(**hit) for hit in values.get("hits", [])]
        values["attachments"] = [Attachment(**item) for item in values.get("attachments", [])]
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})

    def would_refuse(self) -> bool:
        return bool(self.would) and self.would not in ("accept", "continue")


def decode_subject(raw: str) -> str:
    """The Subject as people read it: folds undone (RFC 5322 2.2.3), RFC 2047 encoded words decoded.

    Nothing else changes: a line break that is not a fold, a control character, stays as sent.
    """
    if "\n" in raw:
        raw = _FOLD.sub("", raw)
    if "=?" not in raw:
        return raw
    try:
        parts = email.header.decode_header(raw)
        text = "".join(
            part.decode(charset or "ascii", "replace") if isinstance(part, bytes) else part for part, charset in parts
        )
    except (LookupError, ValueError, AssertionError):  # an unknown charset, a broken encoded word
        return raw
    return text


def _first_fields(headers: list[tuple[str, str]]) -> dict[str, str]:
    """The first Subject, Message-ID and From, in one pass over the stored fields."""
    wanted = {"subject", "message-id", "from"}
    found = dict.fromkeys(wanted, "")
    for name, value in headers:
        key = name.lower()
        if key in wanted:
            found[key] = value
            wanted.discard(key)
            if not wanted:
                break
    return found


def _direction(tx: Transaction) -> tuple[str, str]:
    env = tx.envelope
    if env.trusted_relay:
        return "outbound", "trusted relay"
    if env.auth_user:
        return "outbound", "authenticated"
    return "inbound", "other client"


def _attachments(tx: Transaction) -> list[Attachment]:
    facts = tx._facts  # only when a check walked the message: the record never walks it itself
    if facts is None:
        return []
    true_types: dict[str, str] = tx.scratch.get("true_types", {})  # part path -> type, when a check left them
    found = []
    for part in facts.parts:
        if not (part.is_attachment or part.filename):
            continue
        found.append(
            Attachment(
                name=record_text(part.filename, 255),
                declared=record_text(part.content_type, 100),
                size=part.decoded_size,
                true_type=true_types.get(part.path, ""),
            )
        )
        if len(found) >= MAX_ATTACHMENTS:
            break
    return found


def _hit(verdict: Verdict) -> Hit:
    return Hit(
        check=verdict.check,
        rule=record_text(verdict.rule, 200),
        mode=verdict.mode.value,
        action=verdict.action.value,
        score=verdict.score,
        reason=record_text(verdict.reason, 300),
        reply=record_text(verdict.smtp_reply(), REPLY_LIMIT) if verdict.action in _REFUSALS else "",
    )


def build(tx: Transaction, verdict: Verdict, elapsed: float | None = None, now: float | None = None) -> DecisionRecord:
    """The record of one decided message."""
    env = tx.envelope
    direction, why = _direction(tx)
    # every finding the pipeline recorded (what govmilter_rule_hits_total counts); a verdict from
    # outside the checks (shutdown, an adapter error) is the record's action, check and rule only
    hits = tx.hits
    would = next((h for h in hits if h.mode is Mode.MONITOR and h.action in _REFUSALS), None)
    monitor_score, outcome = tx.scratch.get("monitor_score", (None, ""))
    would_action = would.action.value if would is not None else (outcome if outcome not in ("", "accept") else "")
    durations = {name: round(sec * 1000, 3) for name, sec in tx.scratch.get("durations", {}).items()}
    fields = _first_fields(tx.headers)
    return DecisionRecord(
        time=time.time() if now is None else now,
        node=NODE,
        queue_id=record_text(env.queue_id, 64),
        message_id=record_text(fields["message-id"].strip(), 300),
        subject=record_text(decode_subject(fields["subject"]), SUBJECT_LIMIT),
        mail_from=record_text(env.mail_from, ADDRESS_LIMIT),
        rcpts=[record_text(r, ADDRESS_LIMIT) for r in env.rcpts[:MAX_RCPTS]],
        rcpts_total=len(env.rcpts),
        from_header=record_text(fields["from"].strip(), ADDRESS_LIMIT),
        client_ip=record_text(env.client_ip, 64),
        client_name=record_text(env.client_host, 255),
        direction=direction,
        direction_why=why,
        authenticated=bool(env.auth_user),
        size=tx.raw_size,
        action=verdict.action.value,
        check=verdict.check if verdict.action is not Action.ACCEPT else "",
        rule=record_text(verdict.rule, 200) if verdict.action is not Action.ACCEPT else "",
        reply=record_text(verdict.smtp_reply(), REPLY_LIMIT) if verdict.action in _REFUSALS else "",
        ruleset=tx.ruleset.version,
        score=round(sum(h.score for h in hits if h.mode is Mode.ENFORCE and h.rule), 3),
        would_score=monitor_score,
        would=would_action,
        elapsed_ms=round(elapsed * 1000, 3) if elapsed is not None else None,
        hits=[_hit(h) for h in hits[:MAX_HITS]],
        attachments=_attachments(tx),
        durations_ms=durations,
    )
