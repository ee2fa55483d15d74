"""The checks: each gets plain facts and returns Verdicts (see pipeline.py).

One module or folder per check: forwarding/, size, attachments, antivirus/,
dnsbl, content/. No check imports another; what two checks share lives below
them (ruleset/, mime/, text/, clients/, model). `CheckHooks` gives a check the
optional hooks of pipeline.Check as no-ops.
"""

from __future__ import annotations

from govmilter.model import Transaction, Verdict


class CheckHooks:
    """The optional hooks of a check, doing nothing: override the ones a check needs."""

    def accepted(self, tx: Transaction) -> None:
        """Called once the message is accepted (after every check of every stage)."""

    def refused(self, tx: Transaction, verdict: Verdict) -> None:
        """Called when a check (this one or another) refused the message with an enforced verdict."""

    def health(self) -> dict[str, object] | None:
        """What /health reports for this check (its "ok" counts toward the whole), or None."""
        return None
