#!/usr/bin/env bash
# chatd's native protocol over TLS against the same over a WebSocket (wss, the web listener), same
# generator, same workloads, alternating, a fresh daemon and database for every run: server CPU per
# delivery (fan-out, paced and burst phases) and daemon memory per idle logged-in connection.
#
#   bench/ws-vs-tls.sh                 # ROUNDS=3, small scale (a shared machine)
#   ROUNDS=5 FAN_C=1000 IDLE_N=2000 bench/ws-vs-tls.sh
#
# Results: $OUT/r<round>-<tls|wss>-<fanout|idle>.json, then the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${ROUNDS:-3}
FAN_C=${FAN_C:-200} FAN_R=${FAN_R:-4} FAN_S=${FAN_S:-20}
PACED_RATE=${PACED_RATE:-200} PACED_M=${PACED_M:-20} BURST_M=${BURST_M:-200} WINDOW=${WINDOW:-8}
IDLE_N=${IDLE_N:-1000}
OUT=${OUT:-$ROOT/target/bench-ws/$(date +%Y%m%d-%H%M%S)}
CHATD=$ROOT/target/release/chatd
BENCH=$ROOT/target/release/chatd-bench
mkdir -p "$OUT"

run() { # round transport scenario
  local round=$1 transport=$2 scenario=$3 dir
  dir=$(mktemp -d)
  cp bench/configs/chatd-bench.toml "$dir/chatd.toml"
  (cd "$dir" && exec "$CHATD" --config chatd.toml --listen 127.0.0.1:0 --plain-listen "" --irc-listen "" --web-listen 127.0.0.1:0 --log warn >"$dir/out" 2>"$dir/err") &
  local pid=$!
  trap 'kill $pid 2>/dev/null' EXIT
  for _ in $(seq 1 300); do grep -q '^chatd ready$' "$dir/out" 2>/dev/null && break; sleep 0.1; done
  local addr ca flags=()
  ca=$(sed -n 's/^chatd ca //p' "$dir/out")
  case "$ca" in /*) ;; *) ca="$dir/$ca" ;; esac
  if [ "$transport" = wss ]; then
    addr=$(sed -n 's/^chatd listening web //p' "$dir/out")
    flags=(--ws)
  else
    addr=$(sed -n 's/^chatd listening tls //p' "$dir/out")
  fi
  local args=(--addr "$addr" --tls --ca "$ca" --pid "$pid" "${flags[@]}" --json "$OUT/r$round-$transport-$scenario.json")
  if [ "$scenario" = fanout ]; then
    "$BENCH" "${args[@]}" --prefix f fanout --clients "$FAN_C" --rooms "$FAN_R" --senders "$FAN_S" \
      --rate "$PACED_RATE" --paced-messages "$PACED_M" --messages "$BURST_M" --window "$WINDOW" --burst >/dev/null
  else
    "$BENCH" "${args[@]}" --prefix i idle --clients "$IDLE_N" --settle 3 --concurrency 64 --warmup 20 >/dev/null
  fi
  kill "$pid"
  wait "$pid" || true
  trap - EXIT
  rm -rf "$dir"
}

for round in $(seq 1 "$ROUNDS"); do
  for transport in tls wss; do
    for scenario in fanout idle; do
      echo "round $round: $transport $scenario" >&2
      run "$round" "$transport" "$scenario"
    done
  done
done

python3 - "$OUT" <<'PY'
import json, glob, statistics, sys
out = sys.argv[1]
def med(xs): return statistics.median(xs) if xs else float('nan')
rows = {}
for t in ("tls", "wss"):
    paced, burst, rate, idle = [], [], [], []
    for f in sorted(glob.glob(f"{out}/r*-{t}-fanout.json")):
        phases = json.load(open(f))["results"]["phases"]
        for p in phases:
            cpu = p["server_cpu_us"] / max(p["deliveries"], 1)
            (burst if p["phase"] == "burst" else paced).append(cpu)
            if p["phase"] == "burst":
                rate.append(p["deliveries_per_sec"])
    for f in sorted(glob.glob(f"{out}/r*-{t}-idle.json")):
        idle.append(json.load(open(f))["results"]["bytes_per_connection"] / 1024)
    rows[t] = (med(paced), med(burst), med(rate), med(idle), len(idle))
print(f"{'median':34} {'TLS':>10} {'WebSocket (wss)':>16} {'wss/TLS':>8}")
names = ["paced server CPU us/delivery", "burst server CPU us/delivery", "burst deliveries/s", "idle KiB/connection"]
for i, n in enumerate(names):
    a, b = rows["tls"][i], rows["wss"][i]
    print(f"{n:34} {a:10.2f} {b:16.2f} {b / a:8.2f}x")
print(f"rounds: {rows['tls'][4]}; results in {out}")
PY
