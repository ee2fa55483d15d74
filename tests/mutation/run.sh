#!/usr/bin/env bash
# `make mutation`: cosmic-ray over the safety-critical modules (docs/mutation.md).
# Each module is mutated in a private copy of the tree (cosmic-ray rewrites the file in place; the
# working tree is never touched), with the unit tests of that module as the test command.
# Usage: tests/mutation/run.sh [module-name ...]   (default: all of MODULES below)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY="$ROOT/.venv/bin/python"
CR="$ROOT/.venv/bin"
OUT=${MUTATION_OUT:-$ROOT/.mutation}
mkdir -p "$OUT"

# name | module | tests (the unit tests of that module: fast, no e2e)
MODULES=(
  "adapter|milter/govmilter/adapter.py|tests/test_adapter.py tests/test_shutdown.py"
  "size|milter/govmilter/checks/size.py|tests/checks/test_size.py"
  "clamd|milter/govmilter/clients/clamd.py|tests/clients/test_clamd.py"
  "spool|milter/govmilter/spool.py|tests/test_spool.py"
  "forwarding-check|milter/govmilter/checks/forwarding/check.py|tests/checks/forwarding/test_forwarding.py tests/checks/forwarding/test_forwarding_rules.py"
  "forwarding-rules|milter/govmilter/checks/forwarding/rules.py|tests/checks/forwarding/test_forwarding_rules.py tests/checks/forwarding/test_forwarding.py"
  "mime-walker|milter/govmilter/mime/walker.py|tests/mime/test_mime.py tests/mime/test_walk_vs_email.py"
)

wanted=("$@")
for entry in "${MODULES[@]}"; do
  IFS='|' read -r name module tests <<<"$entry"
  if [[ ${#wanted[@]} -gt 0 && ! " ${wanted[*]} " =~ " $name " ]]; then continue; fi
  work=$(mktemp -d /tmp/govmilter-mutation.XXXXXX)
  tar -C "$ROOT" --exclude=__pycache__ --exclude=.hypothesis -cf - milter tests lab rules pyproject.toml \
    | tar -C "$work" -xf -
  cat >"$work/cosmic-ray.toml" <<TOML
[cosmic-ray]
module-path = "$module"
timeout = 300.0
excluded-modules = []
test-command = "$PY -m pytest -x -q -p no:cacheprovider $tests"

[cosmic-ray.distributor]
name = "local"
TOML
  started=$(date +%s)
  (
    cd "$work"
    export PYTHONPATH="$work/milter"  # the copy, ahead of the editable install of the working tree
    "$CR/cosmic-ray" init cosmic-ray.toml session.sqlite
    "$CR/cosmic-ray" baseline cosmic-ray.toml  # the tests pass on the unmutated copy
    nice -n 19 "$CR/cosmic-ray" exec cosmic-ray.toml session.sqlite
    "$CR/cr-report" --show-diff --surviving-only session.sqlite >"$OUT/$name.report.txt"
    "$CR/cr-rate" session.sqlite >"$OUT/$name.rate.txt"
  )
  cp "$work/session.sqlite" "$OUT/$name.sqlite"
  rm -rf "$work"
  elapsed=$(( $(date +%s) - started ))
  echo "$name: survival rate $(cat "$OUT/$name.rate.txt")% in ${elapsed}s; survivors: $OUT/$name.report.txt"
done
