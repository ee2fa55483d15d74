"""Split a cosmic-ray session into N shards and merge their results back (tests/mutation/run.sh).

cosmic-ray's own parallel distributor ("http") listens on every interface and runs whatever test
command a request names; we keep to one `cosmic-ray exec` per private copy of the tree instead, each
on its own shard of the session:

    shard.py split SESSION N PREFIX     # PREFIX.0.sqlite ... PREFIX.<N-1>.sqlite, every N-th mutant
    shard.py merge SESSION SHARD...     # copies the shards' results into SESSION
    shard.py counts SESSION             # mutants, killed, survived, other, pending
"""

from __future__ import annotations

import shutil
import sqlite3
import sys


def split(session: str, count: int, prefix: str) -> None:
    with sqlite3.connect(session) as db:
        # in the order of the file: a run stopped early has finished the first definitions, not a random half
        jobs = [row[0] for row in db.execute("SELECT job_id FROM mutation_specs ORDER BY start_pos_row, start_pos_col")]
    for index in range(count):
        path = f"{prefix}.{index}.sqlite"
        shutil.copyfile(session, path)
        drop = [(job,) for position, job in enumerate(jobs) if position % count != index]
        with sqlite3.connect(path) as db:
            for table in ("work_results", "mutation_specs", "work_items"):
                db.executemany(f"DELETE FROM {table} WHERE job_id = ?", drop)  # noqa: S608 (fixed names)


def merge(session: str, shards: list[str]) -> None:
    with sqlite3.connect(session) as db:
        for shard in shards:
            db.execute("ATTACH DATABASE ? AS shard", (shard,))
            db.execute("INSERT OR REPLACE INTO work_results SELECT * FROM shard.work_results")
            db.commit()
            db.execute("DETACH DATABASE shard")


def counts(session: str) -> str:
    with sqlite3.connect(session) as db:
        total = db.execute("SELECT count(*) FROM work_items").fetchone()[0]
        query = "SELECT lower(coalesce(test_outcome, worker_outcome)), count(*) FROM work_results GROUP BY 1"
        outcomes = dict(db.execute(query).fetchall())
        done = sum(outcomes.values())
    killed = outcomes.get("killed", 0)
    survived = outcomes.get("survived", 0)
    other = done - killed - survived
    return f"mutants {total}, killed {killed}, survived {survived}, other {other}, pending {total - done}"


def main(argv: list[str]) -> int:
    if len(argv) >= 4 and argv[0] == "split":
        split(argv[1], int(argv[2]), argv[3])
    elif len(argv) >= 2 and argv[0] == "merge":
        merge(argv[1], argv[2:])
    elif len(argv) == 2 and argv[0] == "counts":
        print(counts(argv[1]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
