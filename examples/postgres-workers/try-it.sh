#!/bin/sh
# The recipe on one machine, against the built-in fake server instead of the API:
#
#   ideobatch fake-server --port 8765 --api-key try-me &
#   CRAZYROUTER_API_KEY=try-me LEDGER=postgresql://postgres@127.0.0.1/ideobatch_try \
#       sh examples/postgres-workers/try-it.sh
#
# LEDGER: a PostgreSQL database you may write to; BASE_URL: where the API (or the
# fake server) is, default http://127.0.0.1:8765. Exits with the workers' worst code.
set -eu
cd "$(dirname "$0")"
: "${LEDGER:?set LEDGER to a postgresql:// URL}"
BASE_URL=${BASE_URL:-http://127.0.0.1:8765}

ideobatch db upgrade --ledger "$LEDGER"
ideobatch plan manifest.yaml --save --budget 5 --ledger "$LEDGER"

# two workers, as two machines would run them (each with the key in its environment)
ideobatch worker --ledger "$LEDGER" --base-url "$BASE_URL" --quiet &
first=$!
ideobatch worker --ledger "$LEDGER" --base-url "$BASE_URL" --quiet &
second=$!
code=0
for pid in "$first" "$second"; do
  rc=0
  wait "$pid" || rc=$?
  if [ "$rc" -gt "$code" ]; then code=$rc; fi    # 5 > 3 > 1 > 0: the worst wins
done

ideobatch status pg-posters --ledger "$LEDGER"
exit "$code"
