"""The lab's clamd for the tests: lab/stack.py's Clamd, with its test database.

One clamd class for the lab, the tests and the benchmarks (lab/stack.py); this module
keeps the tests' names for it.
"""

from __future__ import annotations

from stack import CLAMD, EICAR, TESTFILES, free_port
from stack import Clamd as LabClamd

__all__ = ["CLAMD", "EICAR", "TESTFILES", "LabClamd", "free_port"]
