"""govmilter with injected faults, to prove that our own bug answers 451 and loses nothing.

A message with `X-Inject-Fault: adapter` raises inside the adapter's machinery
(the pipeline call itself); `X-Inject-Fault: check` raises inside a check.
"""

from __future__ import annotations

import sys

from govmilter import pipeline
from govmilter.__main__ import main
from govmilter.checks import CheckHooks
from govmilter.model import Stage, Transaction, Verdict

original_run = pipeline.Pipeline.run


def run_with_faults(self: pipeline.Pipeline, stage: Stage, tx: Transaction) -> Verdict | None:
    fault = tx.first_header("X-Inject-Fault")
    if stage is Stage.EOM and fault == "adapter":
        raise RuntimeError("injected fault in the adapter")
    if stage is Stage.EOM and fault == "check":

        class Exploding(CheckHooks):
            name = "exploding"
            stages = frozenset({Stage.EOM})

            def run(self, stage: Stage, tx: Transaction) -> list[Verdict]:
                raise RuntimeError("injected fault in a check")

        return original_run(pipeline.Pipeline([Exploding()], self.metrics), stage, tx)
    return original_run(self, stage, tx)


pipeline.Pipeline.run = run_with_faults  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main())
