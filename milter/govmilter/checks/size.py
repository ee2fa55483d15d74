"""The size check: the 20 MB attachment cap of QD 06/2022 Dieu 5.1.

Early answers save bandwidth: a SIZE= declared at MAIL FROM above the raw
ceiling is refused there, and a body whose raw size passes the ceiling is
refused at that chunk, before the rest is read. At end of message the MIME
walk's decoded attachment bytes are held against the cap itself (what counts
is defined in govmilter.mime: everything but the message's own body text).

Two policies answer what the walk could not judge plainly:

- parse_error_action, for a walk that a limit cut short (more than
  Limits.max_parts parts, nesting past max_depth, an entity header past
  max_header). The bytes past a limit are still counted toward the cap (as
  parts, or as one raw file), but they are not typed: an .exe as part 1 001
  would escape the attachment-type rules. The default is therefore "reject"
  (554 5.6.0): no real mail comes near these limits, and "accept" would turn a
  limit into a way around the policy. "accept" records a monitor hit (logged,
  counted, tagged): never a silent pass.
- malformed_action, for ambiguous structure: a part or the message carrying
  two Content-Type, Content-Transfer-Encoding or Content-Disposition fields
  that read differently (one rule per field: duplicate-content-type, ...),
  which clients resolve differently so that the checks may judge another
  message than the reader sees; and a header flood (Transaction.headers_truncated:
  more fields than the checks are given), rule header-flood. Default "reject".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from govmilter.checks import CheckHooks
from govmilter.config import Config, SizeConfig
from govmilter.metrics import Metrics
from govmilter.mime import AMBIGUOUS_DEFECTS, LIMIT_DEFECTS
from govmilter.model import Action, Mode, Stage, Transaction, Verdict

HEADER_ALLOWANCE = 2 * 1024 * 1024  # headers and text parts beside the attachments


def derived_raw_ceiling(attachment_limit: int) -> int:
    """The largest raw message that can still hold `attachment_limit` decoded bytes.

    base64 turns 3 bytes into 4 and adds CRLF every 76 characters.
    """
    return math.ceil(attachment_limit * 4 / 3 * 78 / 76) + HEADER_ALLOWANCE


def refusal(rule: str, text: str, reason: str) -> Verdict:
    return Verdict(Action.REJECT, "size", rule=rule, code="552", enhanced="5.3.4", text=text, reason=reason)


def over_cap(replies: SizeConfig, limit: int, found: int) -> Verdict:
    return refusal(
        "attachment-cap",
        replies.reply_text_attachment_cap.format(limit=limit, found=found),
        f"attachments {found} bytes > {limit}",
    )


def over_declared(replies: SizeConfig, limit: int, ceiling: int, declared: int) -> Verdict:
    return refusal(
        "declared-size",
        replies.reply_text_declared_size.format(limit=limit, ceiling=ceiling, declared=declared),
        f"SIZE={declared} > {ceiling}",
    )


def over_raw(replies: SizeConfig, limit: int, ceiling: int, received: int) -> Verdict:
    return refusal(
        "raw-size",
        replies.reply_text_raw_size.format(limit=limit, ceiling=ceiling, received=received),
        f"raw {received} bytes > {ceiling}",
    )


def parse_error(replies: SizeConfig, action: str, defects: Sequence[str]) -> Verdict:
    """The configured answer to a message whose structure the walk could not follow to the end."""
    reason = "MIME walk stopped by a limit: " + ",".join(defects)
    if action == "tempfail":
        text = replies.reply_text_parse_error_tempfail.format()
        return Verdict(
            Action.TEMPFAIL, "size", rule="parse-error", code="451", enhanced="4.6.0", text=text, reason=reason
        )
    if action == "reject":
        text = replies.reply_text_parse_error.format()
        return Verdict(
            Action.REJECT, "size", rule="parse-error", code="554", enhanced="5.6.0", text=text, reason=reason
        )
    # accept: recorded, logged, counted, and the message goes on to the other checks
    return Verdict(Action.CONTINUE, "size", rule="parse-error", mode=Mode.MONITOR, reason=reason)


_MALFORMED_WORDS = {
    "duplicate-content-type": ("hai truong Content-Type khac nhau", "two different Content-Type fields"),
    "duplicate-content-transfer-encoding": (
        "hai truong Content-Transfer-Encoding khac nhau",
        "two different Content-Transfer-Encoding fields",
    ),
    "duplicate-content-disposition": (
        "hai truong Content-Disposition khac nhau",
        "two different Content-Disposition fields",
    ),
    "duplicate-parameter": (
        "mot tham so MIME co hai gia tri khac nhau",
        "a MIME parameter given twice with different values",
    ),
    "header-flood": ("qua nhieu truong tieu de", "too many header fields"),
}


def malformed(replies: SizeConfig, action: str, defect: str) -> Verdict:
    """The configured answer to ambiguous structure or a header flood; the rule is the defect."""
    words_vi, words_en = _MALFORMED_WORDS.get(defect, ("cau truc khong ro rang", "ambiguous structure"))
    reason = f"malformed message: {defect}"
    if action == "tempfail":
        text = replies.reply_text_malformed_tempfail.format(what_vi=words_vi, what_en=words_en)
        return Verdict(Action.TEMPFAIL, "size", rule=defect, code="451", enhanced="4.6.0", text=text, reason=reason)
    if action == "reject":
        text = replies.reply_text_malformed.format(what_vi=words_vi, what_en=words_en)
        return Verdict(Action.REJECT, "size", rule=defect, code="554", enhanced="5.6.0", text=text, reason=reason)
    return Verdict(Action.CONTINUE, "size", rule=defect, mode=Mode.MONITOR, reason=reason)


class SizeCheck(CheckHooks):
    name = "size"
    stages = frozenset({Stage.MAIL, Stage.BODY, Stage.EOM})

    def __init__(
        self,
        attachment_limit: int,
        raw_ceiling: int,
        parse_error_action: str,
        metrics: Metrics,
        malformed_action: str = "reject",
        replies: SizeConfig | None = None,
    ):
        self.replies = replies or SizeConfig()
        self.attachment_limit = attachment_limit
        self.raw_ceiling = raw_ceiling
        self.parse_error_action = parse_error_action
        self.malformed_action = malformed_action
        self.metrics = metrics

    def run(self, stage: Stage, tx: Transaction) -> Sequence[Verdict]:
        if stage is Stage.MAIL:
            declared = tx.envelope.declared_size
            if declared is not None and declared > self.raw_ceiling:
                return [over_declared(self.replies, self.attachment_limit, self.raw_ceiling, declared)]
        elif stage is Stage.BODY:
            if tx.raw_size > self.raw_ceiling:
                return [over_raw(self.replies, self.attachment_limit, self.raw_ceiling, tx.raw_size)]
        elif stage is Stage.EOM:
            return self._end_of_message(tx)
        return []

    def _end_of_message(self, tx: Transaction) -> list[Verdict]:
        facts = tx.facts()
        self.metrics.attachment_size.observe(facts.attachment_bytes)
        for defect in facts.defects:
            self.metrics.mime_defects.labels(defect=defect).inc()
        if facts.attachment_bytes > self.attachment_limit:
            return [over_cap(self.replies, self.attachment_limit, facts.attachment_bytes)]
        found: list[Verdict] = []
        ambiguous = [d for d in facts.defects if d in AMBIGUOUS_DEFECTS]
        for defect in (["header-flood"] if tx.headers_truncated else []) + ambiguous:
            verdict = malformed(self.replies, self.malformed_action, defect)
            if verdict.refuses:
                return [*found, verdict]
            found.append(verdict)
        stopped = [d for d in facts.defects if d in LIMIT_DEFECTS]
        if stopped:
            found.append(parse_error(self.replies, self.parse_error_action, stopped))
        return found


def build(config: Config, metrics: Metrics) -> SizeCheck:
    limit = config.size.attachment_limit
    return SizeCheck(
        limit,
        config.size.raw_ceiling or derived_raw_ceiling(limit),
        config.size.parse_error_action,
        metrics,
        config.size.malformed_action,
        config.size,
    )
