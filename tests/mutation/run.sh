#!/usr/bin/env bash
# `make mutation`: cosmic-ray over the safety-critical modules (docs/mutation.md).
# Each module is mutated in private copies of the tree (cosmic-ray rewrites the file in place; the
# working tree is never touched), with the unit tests of that module as the test command.
# Usage: tests/mutation/run.sh [module-name ...]   (default: all of MODULES below)
# MUTATION_JOBS=N (default 2) runs N copies side by side, each on every N-th mutant (shard.py).
# MUTATION_OUT=DIR (default .mutation/) receives NAME.rate.txt, NAME.report.txt, NAME.sqlite,
# NAME.source.py and NAME.seconds.txt. Survivors again, after a new test: tests/mutation/rerun.py.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY="$ROOT/.venv/bin/python"
CR="$ROOT/.venv/bin"
OUT=${MUTATION_OUT:-$ROOT/.mutation}
JOBS=${MUTATION_JOBS:-2}
mkdir -p "$OUT"

# name | module | tests (the unit tests of that module: fast, no e2e; pytest -x stops at the first
# failure) | slow tests | the top-level functions the slow tests are run for (when the fast ones pass)
MODULES=(
  "size|milter/govmilter/checks/size.py|tests/checks/test_size.py||"
  # tests/test_shutdown.py starts the daemon as a process (~15 s): only for the process-level code
  "adapter|milter/govmilter/adapter.py|tests/test_adapter.py|tests/test_shutdown.py|_set_nodelay_on_listener _inet_port _register _Stop serve _shutdown _close_listener _listener_fds _listen_problem"
  "clamd|milter/govmilter/clients/clamd.py|tests/clients/test_clamd.py||"
  "spool|milter/govmilter/spool.py|tests/test_spool.py||"
  "forwarding-check|milter/govmilter/checks/forwarding/check.py|tests/checks/forwarding/test_forwarding.py tests/checks/forwarding/test_forwarding_rules.py||"
  "forwarding-rules|milter/govmilter/checks/forwarding/rules.py|tests/checks/forwarding/test_forwarding_rules.py tests/checks/forwarding/test_forwarding.py||"
  "mime-walker|milter/govmilter/mime/walker.py|tests/mime/test_mime.py tests/mime/test_walk_vs_email.py||"
)

copy_tree() {  # a private copy of what the tests need, without compiled files
  mkdir -p "$1"
  tar -C "$ROOT" --exclude=__pycache__ --exclude=.hypothesis -cf - milter tests lab rules pyproject.toml \
    | tar -C "$1" -xf -
}

# no .pyc files in the copies: a mutant of the same size written in the same second as the last one
# would otherwise run the last one's bytecode
export PYTHONDONTWRITEBYTECODE=1

wanted=("$@")
for entry in "${MODULES[@]}"; do
  IFS='|' read -r name module fast slow slow_in <<<"$entry"
  if [[ ${#wanted[@]} -gt 0 && ! " ${wanted[*]} " =~ " $name " ]]; then continue; fi
  base=$(mktemp -d /tmp/govmilter-mutation.XXXXXX)
  started=$(date +%s)
  shards=()
  cp "$ROOT/$module" "$base/pristine.py"
  for ((i = 0; i < JOBS; i++)); do
    work="$base/$i"
    copy_tree "$work"
    command="$PY $ROOT/tests/mutation/run_tests.py $module $base/pristine.py --fast $fast"
    if [[ -n $slow ]]; then command+=" --slow $slow --slow-in $slow_in"; fi
    cat >"$work/cosmic-ray.toml" <<TOML
[cosmic-ray]
module-path = "$module"
timeout = 180.0
excluded-modules = []
test-command = "$command -- -x -q -p no:cacheprovider --basetemp=$work/.pytest-tmp"

[cosmic-ray.distributor]
name = "local"
TOML
    shards+=("$base/session.$i.sqlite")
  done
  (
    cd "$base/0"
    export PYTHONPATH="$base/0/milter"  # the copy, ahead of the editable install of the working tree
    "$CR/cosmic-ray" init cosmic-ray.toml "$base/session.sqlite"
    "$CR/cosmic-ray" baseline cosmic-ray.toml  # the tests pass on the unmutated copy
  )
  "$PY" "$ROOT/tests/mutation/shard.py" split "$base/session.sqlite" "$JOBS" "$base/session"
  pids=()
  for ((i = 0; i < JOBS; i++)); do
    (
      cd "$base/$i"
      export PYTHONPATH="$base/$i/milter"
      nice -n 19 "$CR/cosmic-ray" exec cosmic-ray.toml "$base/session.$i.sqlite"
    ) &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
  "$PY" "$ROOT/tests/mutation/shard.py" merge "$base/session.sqlite" "${shards[@]}"
  "$CR/cr-report" --show-diff --surviving-only "$base/session.sqlite" >"$OUT/$name.report.txt"
  "$CR/cr-rate" "$base/session.sqlite" >"$OUT/$name.rate.txt"
  cp "$base/session.sqlite" "$OUT/$name.sqlite"
  cp "$base/pristine.py" "$OUT/$name.source.py"  # for rerun.py: the text the mutants were made from
  rm -rf "$base"
  elapsed=$(( $(date +%s) - started ))
  echo "$elapsed" >"$OUT/$name.seconds.txt"
  echo "$name: $("$PY" "$ROOT/tests/mutation/shard.py" counts "$OUT/$name.sqlite");" \
    "survival rate $(cat "$OUT/$name.rate.txt")% in ${elapsed}s; survivors: $OUT/$name.report.txt"
done
