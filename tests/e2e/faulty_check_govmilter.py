"""govmilter whose content check raises on a message with `X-Inject-Fault: content`.

A real check failing inside the real pipeline: the metrics test sees the error counted
under that check's name, on the series that exists at 0 from the start.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from govmilter.__main__ import main
from govmilter.checks.content import check as content
from govmilter.model import Stage, Transaction, Verdict

original_run = content.ContentCheck.run


def run_with_fault(self: content.ContentCheck, stage: Stage, tx: Transaction) -> Sequence[Verdict]:
    if tx.first_header("X-Inject-Fault") == "content":
        raise RuntimeError("injected fault in the content check")
    return original_run(self, stage, tx)


content.ContentCheck.run = run_with_fault  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main())
