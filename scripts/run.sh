#!/usr/bin/env bash
# Builds and runs chatd with the stock bot on the embedded defaults (TLS on 127.0.0.1:6697).
# First run: creates certs/ (a local CA and a localhost certificate) and data/ (the database and the
# bot's password). Ctrl-C stops both. Extra arguments go to chatd (e.g. --listen 0.0.0.0:6697).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p chatd -p chatd-bot -p chatd-cli

log_dir=$(mktemp -d)
chatd_out="$log_dir/chatd.out"
# The web client on https://localhost:8443/ unless the arguments say otherwise.
web=(--web-listen 127.0.0.1:8443)
for arg in "$@"; do
  case "$arg" in --web-listen*) web=() ;; esac
done
target/release/chatd "${web[@]}" "$@" >"$chatd_out" &
chatd_pid=$!
bot_pid=""
cleanup() {
  [ -n "$bot_pid" ] && kill "$bot_pid" 2>/dev/null || true
  kill "$chatd_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$log_dir"
}
trap cleanup EXIT INT TERM

for _ in $(seq 1 300); do
  grep -q '^chatd ready$' "$chatd_out" 2>/dev/null && break
  kill -0 "$chatd_pid" 2>/dev/null || { echo "chatd failed to start" >&2; exit 1; }
  sleep 0.1
done
grep -q '^chatd ready$' "$chatd_out" || { echo "chatd did not become ready" >&2; exit 1; }
cat "$chatd_out"
addr=$(sed -n 's/^chatd listening tls //p' "$chatd_out")
ca=$(sed -n 's/^chatd ca //p' "$chatd_out")

target/release/chatd-bot --addr "$addr" --ca "$ca" --password-file data/stockbot.secret &
bot_pid=$!

cat <<MSG

chatd is up on $addr with the stock bot. In another terminal:
  openssl s_client -quiet -connect $addr -CAfile $ca
  target/release/chat --ca $ca $addr
  or an IRC client on $(sed -n 's/^chatd listening irc //p' "$chatd_out") (README: "Connecting with an IRC client")
  or a browser: https://localhost:$(sed -n 's/^chatd listening web .*:\([0-9]*\)$/\1/p' "$chatd_out")/ (README: "In the browser")
Without internet access the bot answers /stock=... with "the quote service is unreachable".
Ctrl-C stops chatd and the bot.
MSG
wait "$chatd_pid"
