"""The test command of one mutant (tests/mutation/run.sh): the module's fast unit tests, then its
slow ones only when the mutation lies in a top-level function or class they exist for.

    run_tests.py MODULE PRISTINE --fast FILE... [--slow FILE... --slow-in NAME...] -- PYTEST-ARGS...

MODULE is the (mutated) file, PRISTINE an unmutated copy: the first line where they differ names
the mutated top-level definition. Exit status 0 = the mutant survived, anything else = killed.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys


def mutated_definition(module: str, pristine: str) -> str | None:
    with open(module, encoding="utf-8") as mutated, open(pristine, encoding="utf-8") as original:
        new, old = mutated.read().splitlines(), original.read().splitlines()
    line = next((n for n, (a, b) in enumerate(zip(new, old, strict=False), 1) if a != b), min(len(new), len(old)))
    for node in ast.parse("\n".join(old)).body:
        end = getattr(node, "end_lineno", node.lineno)
        if node.lineno <= line <= end and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            return node.name
    return None


def main() -> int:
    own, _, pytest_args = " ".join(sys.argv[1:]).partition(" -- ")
    parser = argparse.ArgumentParser()
    parser.add_argument("module")
    parser.add_argument("pristine")
    parser.add_argument("--fast", nargs="+", required=True)
    parser.add_argument("--slow", nargs="*", default=[])
    parser.add_argument("--slow-in", nargs="*", default=[])
    args = parser.parse_args(own.split())
    pytest = [sys.executable, "-m", "pytest", *pytest_args.split()]
    status = subprocess.call([*pytest, *args.fast])
    if status != 0 or not args.slow:
        return status
    if args.slow_in and mutated_definition(args.module, args.pristine) not in args.slow_in:
        return 0
    return subprocess.call([*pytest, *args.slow])


if __name__ == "__main__":
    sys.exit(main())
