#!/usr/bin/env bash
# Starts a local three-node chatd cluster to try (docs/cluster.md): a throwaway PostgreSQL (initdb +
# pg_ctl in a temporary directory; as the `postgres` account when run as root, since PostgreSQL
# refuses to run as root) and a throwaway nats-server, both on free loopback ports, then three chatd
# nodes n1, n2, n3 (release build), each with its own configuration, listeners and data directory,
# sharing one certificate authority, and the stock bot connected to n1. Ctrl-C stops everything
# and removes the temporary directories.
#
# Needs Debian's postgresql and nats-server packages (scripts/test.sh installs them) and python3
# (to find free ports).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$pg_bin/initdb" ] || { echo "PostgreSQL is missing: apt-get install postgresql" >&2; exit 1; }
nats=$(command -v nats-server || echo /usr/sbin/nats-server)
[ -x "$nats" ] || { echo "nats-server is missing: apt-get install nats-server" >&2; exit 1; }

cargo build --release -p chatd -p chatd-bot -p chatd-cli

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

work=$(mktemp -d /tmp/chatd-cluster.XXXXXX)
pg_dir=$(mktemp -d /tmp/chatd-cluster-pg.XXXXXX)
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  chown postgres: "$pg_dir"
  as_pg=(runuser -u postgres --)
fi
pg() { (cd "$pg_dir" && "${as_pg[@]}" "$pg_bin/$1" "${@:2}"); }

pids=()
pg_started=""
cleanup() {
  trap - EXIT INT TERM
  echo
  echo "stopping the cluster"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "$pg_started" ] && pg pg_ctl -D "$pg_dir/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$work" "$pg_dir"
}
trap cleanup EXIT INT TERM

# PostgreSQL: trust authentication, loopback only, the socket in its own directory.
pg_port=$(free_port)
pg initdb -D "$pg_dir/data" -A trust -U postgres -E UTF8 --locale=C --no-sync >/dev/null
pg pg_ctl -D "$pg_dir/data" -l "$pg_dir/postgres.log" -w \
  -o "-k $pg_dir -p $pg_port -c listen_addresses=127.0.0.1" start >/dev/null
pg_started=1
pg createdb -h 127.0.0.1 -p "$pg_port" -U postgres chatd
pg_url="postgresql://postgres@127.0.0.1:$pg_port/chatd"

# NATS: core publish/subscribe only (no JetStream), loopback only.
nats_port=$(free_port)
"$nats" -a 127.0.0.1 -p "$nats_port" -l "$work/nats.log" &
pids+=($!)
nats_url="nats://127.0.0.1:$nats_port"

# Starts node n$1 in $work/n$1 and waits until it is ready. Every node uses n1's bot password file,
# so they all give the stockbot account the same password.
start_node() {
  local n=$1 dir="$work/n$1"
  mkdir -p "$dir"
  cat >"$dir/chatd.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[irc]
listen = "127.0.0.1:0"
[storage]
backend = "postgres"
postgres_url = "$pg_url"
[cluster]
node = "n$n"
nats_url = "$nats_url"
[[bots]]
name = "stockbot"
password_file = "$work/n1/data/stockbot.secret"
TOML
  (cd "$dir" && exec "$root/target/release/chatd" --config chatd.toml >chatd.out 2>chatd.log) &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 1 300); do
    grep -q '^chatd ready$' "$dir/chatd.out" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { echo "n$n failed to start; its log:" >&2; cat "$dir/chatd.log" >&2; exit 1; }
    sleep 0.1
  done
  grep -q '^chatd ready$' "$dir/chatd.out" || { echo "n$n did not become ready" >&2; exit 1; }
  echo "$pid" >"$dir/pid"
}

start_node 1
# n1 made a CA and a certificate for localhost; n2 and n3 use the same, so one CA file trusts all.
for n in 2 3; do
  mkdir -p "$work/n$n"
  cp -a "$work/n1/certs" "$work/n$n/certs"
  start_node "$n"
done
ca="$work/n1/certs/ca.pem"
addr() { sed -n 's/^chatd listening tls //p' "$work/n$1/chatd.out"; }
irc() { sed -n 's/^chatd listening irc //p' "$work/n$1/chatd.out"; }

target/release/chatd-bot --addr "$(addr 1)" --ca "$ca" --password-file "$work/n1/data/stockbot.secret" \
  2>"$work/bot.log" &
pids+=($!)

cat <<MSG

A three-node chatd cluster is up: one server on three nodes, one PostgreSQL database, one NATS.
  n1  $(addr 1)  (IRC $(irc 1))  pid $(cat "$work/n1/pid")   the stock bot is connected here
  n2  $(addr 2)  (IRC $(irc 2))  pid $(cat "$work/n2/pid")
  n3  $(addr 3)  (IRC $(irc 3))  pid $(cat "$work/n3/pid")
In three terminals, one per node (all nodes share the CA $ca):
  openssl s_client -quiet -connect $(addr 1) -CAfile $ca
  target/release/chat --ca $ca $(addr 2)
  target/release/chat --ca $ca $(addr 3)
Register on one node, log in on another, JOIN the same room on all three and talk; /stock=aapl.us
typed on any node is answered by the bot on n1 (offline: "the quote service is unreachable").
Try kill -9 of a node's pid: the other nodes go on and lose nothing acknowledged.
PostgreSQL: psql -h 127.0.0.1 -p $pg_port -U postgres chatd     NATS: $nats_url
Logs: $work/n*/chatd.log, $work/bot.log, $work/nats.log, $pg_dir/postgres.log
Ctrl-C stops everything and removes $work and $pg_dir.
MSG
wait
