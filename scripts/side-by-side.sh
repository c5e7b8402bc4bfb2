#!/usr/bin/env bash
# The seed-style FastAPI peer and orderflow measured in one run on this machine, each alone,
# at the same offered rates, on the same broker build (the tansu this project's bootstrap
# builds) and the same PostgreSQL. Prints each system's table, then the ratio of the highest
# rates each sustained.
#
#   scripts/side-by-side.sh [RATE...]          default rates: 100 150 200 250 300 350 400
#   SECONDS_PER_RATE=30 PEER_DIR=... scripts/side-by-side.sh 100 200 300
#
# PEER_DIR is the peer's folder (default ../shared/peers/fastapi-seed beside this checkout);
# its virtualenv is made in VENV (/tmp/peer-venv) from PyPI the first time, and its state
# goes to RUN_DIR (/tmp/peer-run). A rate is sustained when at least 95 % of it is achieved
# with every order right (the peer: every order COMPLETED and its stock check OK; orderflow:
# its bench's own check); each system is offered the rates in turn until one is not
# sustained. The peer is measured first, then stopped and its data dropped; then orderflow is
# stopped and reset (its broker data and service databases wiped), brought up, warmed up and
# measured with `./orderflow bench`, and left running. When the peer sustains every rate
# given, its figure is a lower bound: offer it more.
#
# Each system's highest rate is then narrowed down by halving the gap between its last
# sustained rate and its first failed one, until that gap is at most REFINE_STEP orders/s
# (default 25; 0 keeps the rates given): with coarse rates alone the ratio can be off by a
# whole step (2.50 against 1.60 on one machine, docs/performance.md section 34). Neither
# system is restarted between rates: each load generator waits for every order of a run to
# end before the next (the peer is restarted from clean only when a run left orders that
# never completed, as a restart costs it its warm state: docs/performance.md section 35). The
# summary names, for each system, the rate sustained and the lowest rate failed.
set -euo pipefail
cd "$(dirname "$0")/.."

rates=${*:-100 150 200 250 300 350 400}
seconds=${SECONDS_PER_RATE:-20}
step=${REFINE_STEP:-25}
peer=${PEER_DIR:-$(cd .. && pwd)/shared/peers/fastapi-seed}
export VENV=${VENV:-/tmp/peer-venv} RUN_DIR=${RUN_DIR:-/tmp/peer-run}
out=${OUT_DIR:-bench-results/side-by-side-$(date +%Y%m%d-%H%M%S)}
[ -x "$peer/up.sh" ] || { echo "side-by-side: no peer at $peer (set PEER_DIR)" >&2; exit 1; }
mkdir -p "$out"
out=$(realpath "$out")

say() { printf '\033[1m[side-by-side]\033[0m %s\n' "$*" >&2; }

# The same broker build for both: the one the bootstrap builds (and caches) for orderflow.
export TANSU
TANSU=$(bash scripts/bootstrap.sh)
if [ ! -x "$VENV/bin/python" ]; then
  say "making the peer's virtualenv in $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q fastapi uvicorn asyncpg confluent-kafka httpx orjson uvloop httptools aiohttp sniffio
fi
say "$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); rates: $rates; ${seconds} s each; results in $out"

# --- the peer, alone --------------------------------------------------------------------
./orderflow down >/dev/null 2>&1 || true
(cd "$peer" && ./down.sh --clean >/dev/null 2>&1 || true)
(cd "$peer" && ./up.sh >"$out/peer-up.log" 2>&1) || { say "the peer did not start"; tail "$out/peer-up.log" >&2; exit 1; }
sleep 8
# peer_at RATE: offers the peer RATE for $seconds; true when it sustained it.
peer_at() {
  local rate=$1 sampler
  # CPU per part over the middle half of the run.
  (sleep $((seconds / 4 + 3)); "$VENV/bin/python" "$peer/cpu_sample.py" $((seconds / 2))) >"$out/peer-cpu-$rate.txt" &
  sampler=$!
  (cd "$peer" && "$VENV/bin/python" load.py --rate "$rate" --duration "$seconds" \
    --json-out "$out/peer.jsonl" --label "rate-$rate" 2>&1 || true) \
    | grep -E '^rate|time-to-COMPLETED|stock' | tee -a "$out/peer.txt" | sed 's/^/peer  /' >&2
  wait "$sampler" || true
  sed 's/^/peer    cpu (% of a core)/' "$out/peer-cpu-$rate.txt" | grep -E 'TOTAL|postgres|tansu' >&2 || true
  # The run's own summary (the last JSON line load.py wrote), not its printed report.
  python3 - "$out/peer.jsonl" "$rate" <<'PY'
import json, sys
run = json.loads(open(sys.argv[1]).read().splitlines()[-1])
rate = float(sys.argv[2])
sustained = run["completed"] == run["orders"] and run["stockOk"] and run["achievedPerS"] >= 0.95 * rate
sys.exit(0 if sustained else 1)
PY
}
peer_restart() {
  (cd "$peer" && ./down.sh --clean >/dev/null 2>&1 || true)
  (cd "$peer" && ./up.sh >>"$out/peer-up.log" 2>&1) || { say "the peer did not start"; tail "$out/peer-up.log" >&2; exit 1; }
  sleep 8
}
# between LOW HIGH: the rate halfway, when the gap is wider than the step; else nothing.
between() {
  [ "$step" -gt 0 ] && [ $(($2 - $1)) -gt "$step" ] && echo $((($1 + $2) / 2)) || true
}

peer_best=0 peer_failed=
for rate in $rates; do
  if peer_at "$rate"; then
    peer_best=$rate
  else
    say "the peer did not sustain $rate/s; it is not offered more of the rates given"
    peer_failed=$rate
    break
  fi
done
while [ -n "$peer_failed" ] && mid=$(between "$peer_best" "$peer_failed") && [ -n "$mid" ]; do
  if ! python3 -c 'import json,sys; r = json.loads(open(sys.argv[1]).read().splitlines()[-1]); sys.exit(r["completed"] != r["orders"])' "$out/peer.jsonl"; then
    say "the peer's last run left orders that never completed: restarting it from clean"
    peer_restart
  fi
  say "the peer: narrowing down between $peer_best/s and $peer_failed/s: $mid/s"
  if peer_at "$mid"; then peer_best=$mid; else peer_failed=$mid; fi
done
(cd "$peer" && ./down.sh --clean >/dev/null 2>&1 || true)

# --- orderflow, alone -------------------------------------------------------------------
./orderflow down >/dev/null 2>&1 || true
for db in order payment inventory history analytics notifications registry; do
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS orderflow_$db WITH (FORCE)" postgres
done
rm -rf .orderflow
./orderflow up >"$out/orderflow-up.log" 2>&1 || { say "orderflow did not start"; tail "$out/orderflow-up.log" >&2; exit 1; }
./orderflow bench --no-up --no-limits --no-max --rate 50 --seconds 5 >/dev/null 2>&1 # warm-up
first=${rates%% *}
./orderflow bench --no-up --no-limits --rate "$first" --seconds "$seconds" \
  --max-rates "$(tr ' ' , <<<"$rates")" --step-seconds "$seconds" --out "$out/orderflow.json" \
  | tee "$out/orderflow.txt" >&2
# sustained FILE: the last run in the bench report FILE, as "OFFERED SUSTAINED(0|1)": the
# bench's own verdict on that run (its `sustained` field), so the rule lives in one place.
sustained() {
  python3 -c 'import json, sys
run = json.load(open(sys.argv[1]))["runs"][-1]
print(int(run["offered_per_sec"]), int(run["sustained"]))' "$1"
}
orderflow_best=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["max_sustained_per_sec"] or 0))' "$out/orderflow.json")
orderflow_failed=
read -r last ok < <(sustained "$out/orderflow.json")
[ "$ok" = 1 ] || [ "$last" -le "$orderflow_best" ] || orderflow_failed=$last
while [ -n "$orderflow_failed" ] && mid=$(between "$orderflow_best" "$orderflow_failed") && [ -n "$mid" ]; do
  say "orderflow: narrowing down between $orderflow_best/s and $orderflow_failed/s: $mid/s"
  ./orderflow bench --no-up --no-limits --no-max --rate "$mid" --seconds "$seconds" \
    --out "$out/orderflow-$mid.json" | tee -a "$out/orderflow.txt" >&2 \
    || say "orderflow's bench found its run at $mid/s not correct" # judged below as not sustained
  read -r _ ok < <(sustained "$out/orderflow-$mid.json")
  if [ "$ok" = 1 ]; then orderflow_best=$mid; else orderflow_failed=$mid; fi
done

failed() { [ -n "$1" ] && echo "not $1/s" || echo "every rate given"; }
echo "highest rate sustained, same machine, same run: peer ${peer_best}/s ($(failed "$peer_failed")), orderflow ${orderflow_best}/s ($(failed "$orderflow_failed"))" | tee "$out/summary.txt"
if [ "$peer_best" -gt 0 ]; then
  awk -v o="$orderflow_best" -v p="$peer_best" 'BEGIN { printf "orderflow / peer = %.2f\n", o / p }' | tee -a "$out/summary.txt"
fi
