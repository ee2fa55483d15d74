"""Run the survivors of a session again, with all of a module's tests (docs/mutation.md).

    rerun.py SESSION SOURCE TEST_FILE...      # from anywhere; the tree is this checkout
    RERUN_ROWS=125,178 rerun.py ...           # only the survivors made on those lines of SOURCE

SOURCE is the module's text the session was made from (run.sh keeps it as NAME.source.py). The
module may have changed since: each survivor is found again in today's file by its change (the
same lines removed and added, by the same operator; among identical changes, the same rank), then
applied to a private copy of the tree and the tests run in full (fast and slow, no gate). First the
tests run on the unmutated copy: they must pass. One line per survivor: killed, SURVIVED, or gone
(the line no longer exists). Exit status 1 when any survives.
"""

from __future__ import annotations

import difflib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from cosmic_ray.mutating import mutate_code
from cosmic_ray.plugins import get_operator

ROOT = Path(__file__).resolve().parents[2]
PY = ROOT / ".venv" / "bin" / "python"


def change(before: str, after: str) -> tuple[str, ...]:
    """The removed and added lines of a mutation and the line either side, stripped: what identifies it
    across edits (the same change on another line, a decorator removed from another method, differs)."""
    return tuple(
        line[0] + line[1:].strip()
        for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=1)
        if line[:1] in "+- " and not line.startswith(("+++", "---"))
    )


def changes(source: str, operator_name: str) -> list[tuple[tuple[str, ...], str]]:
    """Every mutation of one operator on a source: (its change, the mutated text), by occurrence."""
    operator = get_operator(operator_name)()
    found = []
    occurrence = 0
    while (mutated := mutate_code(source, operator, occurrence)) is not None:
        found.append((change(source, mutated), mutated))
        occurrence += 1
    return found


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    session, old_source, tests = argv[0], Path(argv[1]).read_text(), argv[2:]
    with sqlite3.connect(session) as db:
        survivors = db.execute(
            "SELECT m.module_path, m.operator_name, m.occurrence, m.start_pos_row FROM work_results r"
            " JOIN mutation_specs m USING (job_id) WHERE lower(r.test_outcome) = 'survived'"
            " ORDER BY m.start_pos_row, m.start_pos_col"
        ).fetchall()
    if os.environ.get("RERUN_ROWS"):
        rows = {int(row) for row in os.environ["RERUN_ROWS"].split(",")}
        survivors = [survivor for survivor in survivors if survivor[3] in rows]
    work = Path(tempfile.mkdtemp(prefix="govmilter-rerun."))
    pytest = [str(PY), "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", f"--basetemp={work}/.pytest-tmp", *tests]
    left = 0
    try:
        for name in ("milter", "tests", "lab", "rules"):
            shutil.copytree(ROOT / name, work / name, ignore=shutil.ignore_patterns("__pycache__", ".hypothesis"))
        shutil.copy(ROOT / "pyproject.toml", work / "pyproject.toml")
        env = {**os.environ, "PYTHONPATH": str(work / "milter"), "PYTHONDONTWRITEBYTECODE": "1"}
        if subprocess.call(pytest, cwd=work, env=env, stdout=subprocess.DEVNULL) != 0:
            print("the tests fail on the unmutated tree: nothing to learn", file=sys.stderr)
            return 2
        for module, operator, occurrence, row in survivors:
            target = work / module
            current = target.read_text()
            old = changes(old_source, operator)
            wanted = old[occurrence][0]
            rank = [c for c, _ in old[: occurrence + 1]].count(wanted) - 1
            matches = [mutated for c, mutated in changes(current, operator) if c == wanted]
            shown = " | ".join(line for line in wanted if line[:1] in "+-")
            if len(matches) <= rank:
                print(f"gone     {module}:{row} {shown}", flush=True)
                continue
            target.write_text(matches[rank])
            try:
                status = subprocess.call(pytest, cwd=work, env=env, stdout=subprocess.DEVNULL, timeout=600)
            except subprocess.TimeoutExpired:
                status = -1
            finally:
                target.write_text(current)
            left += status == 0
            print(f"{'SURVIVED' if status == 0 else 'killed  '} {module}:{row} {shown}", flush=True)
    finally:
        shutil.rmtree(work)
    print(f"{len(survivors)} survivors run again, {left} still survive")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
