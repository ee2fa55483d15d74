"""The size check: the 20 MB attachment cap of QD 06/2022 Dieu 5.1.

Early answers save bandwidth: a SIZE= declared at MAIL FROM above the raw
ceiling is refused there, and a body whose raw size passes the ceiling is
refused at that chunk, before the rest is read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from govmilter.config import Config
from govmilter.metrics import Metrics
from govmilter.model import Action, Stage, Transaction, Verdict

HEADER_ALLOWANCE = 2 * 1024 * 1024  # headers and text parts beside the attachments


def derived_raw_ceiling(attachment_limit: int) -> int:
    """The largest raw message that can still hold `attachment_limit` decoded bytes.

    base64 turns 3 bytes into 4 and adds CRLF every 76 characters.
    """
    return math.ceil(attachment_limit * 4 / 3 * 78 / 76) + HEADER_ALLOWANCE


def too_big(limit: int, found: int, rule: str, what: str) -> Verdict:
    return Verdict(
        Action.REJECT,
        "size",
        rule=rule,
        code="552",
        enhanced="5.3.4",
        text=(
            f"Tep dinh kem vuot qua gioi han {limit} byte, {what} {found} byte (QD 06/2022 Dieu 5.1)"
            f" - attachments exceed the limit of {limit} bytes, {what} {found} bytes"
        ),
        reason=f"{what} {found} bytes > {limit}",
    )


class SizeCheck:
    name = "size"
    stages = frozenset({Stage.MAIL, Stage.BODY})

    def __init__(self, attachment_limit: int, raw_ceiling: int):
        self.attachment_limit = attachment_limit
        self.raw_ceiling = raw_ceiling

    def run(self, stage: Stage, tx: Transaction) -> Sequence[Verdict]:
        if stage is Stage.MAIL:
            declared = tx.envelope.declared_size
            if declared is not None and declared > self.raw_ceiling:
                return [too_big(self.raw_ceiling, declared, "declared-size", "SIZE= khai bao / declared")]
        elif stage is Stage.BODY and tx.raw_size > self.raw_ceiling:
            return [too_big(self.raw_ceiling, tx.raw_size, "raw-size", "da nhan / received")]
        return []


def build(config: Config, metrics: Metrics) -> SizeCheck:
    limit = config.size.attachment_limit
    return SizeCheck(limit, config.size.raw_ceiling or derived_raw_ceiling(limit))
