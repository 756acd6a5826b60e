#!/usr/bin/env bash
# Issue 15's measurements (docs/cluster.md): chatd nodes on PostgreSQL + NATS against one chatd,
# same generator, same bench config (bench/configs/chatd-bench.toml), everything on loopback.
#
#   bench/cluster.sh                 # ROUNDS=3
#   ROUNDS=2 FAN_C=200 PACED_M=20 POSTS_M=500 bench/cluster.sh     # a quick smoke run
#
# Per round, each on fresh daemons and a fresh database (a throwaway PostgreSQL and nats-server,
# started once on free loopback ports; PostgreSQL as the `postgres` account when run as root):
#   sqlite-fanout, pg-fanout  one chatd alone (SQLite; PostgreSQL): a paced fan-out, all clients on it
#   cluster-same              3 nodes; the same fan-out, every client on n1 (same-node delivery)
#   cluster-cross             3 nodes; senders on n1, every receiver on n2 (cross-node delivery)
#   sqlite-posts, pg-posts    durable posts/s (posts -s 8 -m 5000 --window 128) on one chatd
#   cluster-posts             the same with the posters spread over n1, n2, n3
# The fan-out has one sender per room, so in cluster-cross every delivery crosses nodes. Server CPU
# is chatd's own: for a cluster the sum of the three nodes (each one's apart in the JSON,
# server_cpu_us_by_pid, n1 first); PostgreSQL's and nats-server's CPU are not counted.
# Results: $OUT/r<round>-<run>.json, then a table of medians ($OUT/table.txt).
#
# Needs Debian's postgresql and nats-server packages (scripts/test.sh installs them) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ROUNDS=${ROUNDS:-3}
FAN_C=${FAN_C:-1000} FAN_R=${FAN_R:-10}   # clients, rooms (= senders: one per room)
RATE=${RATE:-200}                          # messages/s in total, paced (x ~99 deliveries each)
PACED_M=${PACED_M:-150}                    # messages per sender
POSTS_S=${POSTS_S:-8} POSTS_M=${POSTS_M:-5000} POSTS_W=${POSTS_W:-128}
RUNS=${RUNS:-"sqlite-fanout pg-fanout cluster-same cluster-cross sqlite-posts pg-posts cluster-posts"}
OUT=${OUT:-$ROOT/bench/results/$(date -u +%F)-cluster}
TIMEOUT=${TIMEOUT:-600}

log() { printf '%s cluster-bench: %s\n' "$(date +%T)" "$*" >&2; }

pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$pg_bin/initdb" ] || { echo "PostgreSQL is missing: apt-get install postgresql" >&2; exit 1; }
NATS=$(command -v nats-server || echo /usr/sbin/nats-server)
[ -x "$NATS" ] || { echo "nats-server is missing: apt-get install nats-server" >&2; exit 1; }

log "building release binaries"
cargo build --release -p chatd -p chatd-bench
CHATD=$ROOT/target/release/chatd BENCH=$ROOT/target/release/chatd-bench
mkdir -p "$OUT"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

WORK=$(mktemp -d /tmp/chatd-cluster-bench.XXXXXX)
PG_DIR=$(mktemp -d /tmp/chatd-cluster-bench-pg.XXXXXX)
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  chown postgres: "$PG_DIR"
  as_pg=(runuser -u postgres --)
fi
pg() { (cd "$PG_DIR" && "${as_pg[@]}" "$pg_bin/$1" "${@:2}"); }

NODE_PIDS=() NATS_PID= PG_STARTED=
stop_nodes() {
  for pid in "${NODE_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${NODE_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  NODE_PIDS=()
}
cleanup() {
  trap - EXIT
  stop_nodes
  if [ -n "$NATS_PID" ]; then kill "$NATS_PID" 2>/dev/null || true; wait "$NATS_PID" 2>/dev/null || true; fi
  if [ -n "$PG_STARTED" ]; then pg pg_ctl -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true; fi
  rm -rf "$WORK" "$PG_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# PostgreSQL as it comes (synchronous_commit on, fsync on), trust authentication, loopback only.
PG_PORT=$(free_port)
pg initdb -D "$PG_DIR/data" -A trust -U postgres -E UTF8 --locale=C >/dev/null
pg pg_ctl -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" -w \
  -o "-k $PG_DIR -p $PG_PORT -c listen_addresses=127.0.0.1" start >/dev/null
PG_STARTED=1
NATS_PORT=$(free_port)
"$NATS" -a 127.0.0.1 -p "$NATS_PORT" -l "$WORK/nats.log" &
NATS_PID=$!

# start_node DIR DB [NODE]: a chatd from the bench config in DIR (own ports), on SQLite when DB is
# "sqlite", else on PostgreSQL database DB; with NODE, a cluster node. Waits until it is ready.
start_node() {
  local dir=$1 db=$2 node=${3:-} pid
  mkdir -p "$dir"
  local storage=(-e "")
  [ "$db" = sqlite ] || storage=(-e "s|^db = .*|backend = \"postgres\"\npostgres_url = \"postgresql://postgres@127.0.0.1:$PG_PORT/$db\"|")
  sed "${storage[@]}" bench/configs/chatd-bench.toml >"$dir/chatd.toml"
  [ -z "$node" ] || printf '\n[cluster]\nnode = "%s"\nnats_url = "nats://127.0.0.1:%s"\n' "$node" "$NATS_PORT" >>"$dir/chatd.toml"
  (cd "$dir" && exec "$CHATD" --config chatd.toml --listen 127.0.0.1:0 --plain-listen "" --irc-listen "" --log warn >out 2>err) &
  pid=$!
  NODE_PIDS+=("$pid")
  for _ in $(seq 1 300); do
    grep -q '^chatd ready$' "$dir/out" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  log "chatd in $dir did not get ready:"; cat "$dir/err" >&2; return 1
}
addr() { sed -n 's/^chatd listening tls //p' "$1/out"; }

# start_setup lone-sqlite|lone-pg|cluster DIR: sets ADDRS (one per node), PIDS, CA.
start_setup() {
  local kind=$1 dir=$2 db
  db=chatd_$(basename "$dir" | tr -c 'a-z0-9\n' _)
  [ "$kind" = lone-sqlite ] || pg createdb -h 127.0.0.1 -p "$PG_PORT" -U postgres "$db"
  case $kind in
    lone-sqlite) start_node "$dir/n1" sqlite ;;
    lone-pg) start_node "$dir/n1" "$db" ;;
    cluster)
      start_node "$dir/n1" "$db" n1
      # Every node serves n1's certificate, so one CA file trusts them all.
      for n in 2 3; do
        mkdir -p "$dir/n$n" && cp -a "$dir/n1/certs" "$dir/n$n/"
        start_node "$dir/n$n" "$db" "n$n"
      done ;;
  esac
  ADDRS=() PIDS=
  for n in "$dir"/n*; do ADDRS+=("$(addr "$n")"); done
  PIDS=$(IFS=,; echo "${NODE_PIDS[*]}")
  CA=$dir/n1/certs/ca.pem
}

# run ROUND NAME: one measurement on fresh daemons.
run() {
  local r=$1 name=$2 dir="$WORK/r$1-$2" where=() what
  case $name in
    sqlite-*) start_setup lone-sqlite "$dir" ;;
    pg-*) start_setup lone-pg "$dir" ;;
    cluster-*) start_setup cluster "$dir" ;;
  esac
  case $name in
    cluster-cross) where=(--addr "${ADDRS[0]}" --recv-addr "${ADDRS[1]}") ;;
    cluster-posts) where=(--addr "$(IFS=,; echo "${ADDRS[*]}")") ;;
    *) where=(--addr "${ADDRS[0]}") ;;
  esac
  case $name in
    *-posts) what=(posts -s "$POSTS_S" -m "$POSTS_M" --window "$POSTS_W") ;;
    *) what=(fanout --clients "$FAN_C" --rooms "$FAN_R" --senders "$FAN_R" --rate "$RATE" --messages "$PACED_M") ;;
  esac
  log "round $r: $name (${where[*]}, pids $PIDS, load $(cut -d' ' -f1 /proc/loadavg))"
  "$BENCH" --tls --ca "$CA" "${where[@]}" --pid "$PIDS" --concurrency 256 --timeout "$TIMEOUT" \
    --json "$OUT/r$r-$name.json" "${what[@]}" >"$dir/bench.out" \
    || log "round $r: $name reported a problem (exit $?), see $OUT/r$r-$name.json"
  stop_nodes
  rm -rf "$dir"
}

read -r -a runs <<<"$RUNS"
log "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); PostgreSQL $("$pg_bin/postgres" -V | awk '{print $3}'), nats-server $("$NATS" --version | awk '{print $2}'); results in $OUT"
for ((r = 1; r <= ROUNDS; r++)); do
  # Rotate the order each round so drift in machine load spreads over all runs.
  for ((k = 0; k < ${#runs[@]}; k++)); do run "$r" "${runs[$(((k + r - 1) % ${#runs[@]}))]}"; done
done

python3 - "$OUT" "$FAN_C" "$FAN_R" "$RATE" "$PACED_M" "$POSTS_S" "$POSTS_M" "$POSTS_W" <<'PY' | tee "$OUT/table.txt"
import glob, json, statistics, sys
out, fan_c, fan_r, rate, paced_m, posts_s, posts_m, posts_w = sys.argv[1:]
def runs(name):
    return [json.load(open(f)) for f in sorted(glob.glob(f"{out}/r*-{name}.json"))]
def med(name, get):
    xs = [x for x in (get(v) for v in runs(name)) if x is not None]
    return statistics.median(xs) if xs else float("nan")
def phase(v): return v["results"]["phases"][0]
def lat(q): return lambda v: phase(v)["latency"][q] / 1000
def cpu(v): return phase(v)["server_cpu_us_per_delivery"]
def cpu_n1(v):
    by = phase(v).get("server_cpu_us_by_pid") or [phase(v)["server_cpu_us"]]
    return by[0] / max(phase(v)["deliveries"], 1)
def posts(v): return v["results"]["acked_per_sec"]
def ack99(v): return v["results"]["ack_latency"]["p99_us"] / 1000
bad = [f"{f}: {v['problems'] or 'lost or failed'}" for f in sorted(glob.glob(f"{out}/r*.json"))
       for v in [json.load(open(f))] if not v["ok"]]
n = len(runs("cluster-cross"))
print(f"chatd cluster bench, median of {n} round(s); fan-out: {fan_c} clients, {fan_r} rooms, one sender per room, "
      f"paced {rate} msgs/s x {paced_m} per sender; posts: -s {posts_s} -m {posts_m} --window {posts_w}")
print(f"{'fan-out latency ms':32} {'p50':>8} {'p99':>8} {'p99.9':>8} {'CPU us/deliv':>13} {'n1 only':>8}")
for name, label in [("sqlite-fanout", "one chatd, SQLite"), ("pg-fanout", "one chatd, PostgreSQL"),
                    ("cluster-same", "3 nodes, same node (n1->n1)"), ("cluster-cross", "3 nodes, cross node (n1->n2)")]:
    print(f"{label:32} {med(name, lat('p50_us')):8.2f} {med(name, lat('p99_us')):8.2f} {med(name, lat('p999_us')):8.2f}"
          f" {med(name, cpu):13.2f} {med(name, cpu_n1) if name.startswith('cluster') else float('nan'):8.2f}")
for q in ("p50_us", "p99_us"):
    print(f"cross/same node {q[:-3]}: {med('cluster-cross', lat(q)) / med('cluster-same', lat(q)):.2f}x")
print(f"CPU per delivery, 3 nodes (sum) / one chatd on PostgreSQL: {med('cluster-same', cpu) / med('pg-fanout', cpu):.2f}x "
      f"(n1 alone: {med('cluster-same', cpu_n1) / med('pg-fanout', cpu):.2f}x)")
print(f"{'durable posts':32} {'posts/s':>8} {'ack p99 ms':>11}")
for name, label in [("sqlite-posts", "one chatd, SQLite"), ("pg-posts", "one chatd, PostgreSQL"),
                    ("cluster-posts", "3 nodes, posters on all three")]:
    print(f"{label:32} {med(name, posts):8.0f} {med(name, ack99):11.1f}")
for b in bad: print("PROBLEM", b)
PY
