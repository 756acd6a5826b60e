#!/usr/bin/env bash
# A profile (perf record -g, sampled) of the paced phase, chatd and the bare server over TLS, with
# compare.sh's fan-out load (1,000 clients, 10 rooms, 100 senders, 200 msgs/s, here 30 s of it):
# per server, the share of samples by binary ($OUT/<server>-dso.txt), the hottest symbols
# ($OUT/<server>-top.txt) and the generator's summary ($OUT/<server>-bench.txt).
#
#   bash bench/perf-paced.sh                  # after cargo build --release -p chatd -p chatd-bench
#   SERVERS=chatd OUT=/tmp/p bash bench/perf-paced.sh
#   REPORT_ONLY=chatd bash bench/perf-paced.sh   # the reports again from $OUT/chatd.data
set -u
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "perf-paced: needs perf (Debian: linux-perf)" >&2; exit 2; }
OUT=${OUT:-target/perf-paced/$(date +%Y%m%d-%H%M%S)}; mkdir -p $OUT
B=target/release
report() {
  perf report -i $OUT/$1.data --no-children --sort dso --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -8 > $OUT/$1-dso.txt
  perf report -i $OUT/$1.data --no-children --sort sym --percent-limit 0.7 --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -45 > $OUT/$1-top.txt
}
[ -n "${REPORT_ONLY:-}" ] && { report $REPORT_ONLY; exit; }
for s in ${SERVERS:-chatd bare}; do
  D=$(mktemp -d)
  if [ $s = chatd ]; then
    cp bench/configs/chatd-bench.toml $D/chatd.toml
    $B/chatd --config $D/chatd.toml >$D/out 2>$D/err & P=$!
    for i in $(seq 300); do grep -q 'chatd ready' $D/out 2>/dev/null && break; sleep 0.1; done
    ARGS=(--proto chatd --addr 127.0.0.1:36697 --tls --ca $D/certs/ca.pem)
  else
    source bench/localhost-cert.sh
    localhost_cert $D
    $B/chatd-bare --tls-listen 127.0.0.1:46697 --cert $D/cert.pem --key $D/key.pem >$D/out 2>$D/err & P=$!
    sleep 1
    ARGS=(--proto irc --addr 127.0.0.1:46697 --tls --ca $D/ca.pem)
  fi
  $B/chatd-bench "${ARGS[@]}" --pid $P --concurrency 256 fanout --prefix f --clients 1000 --rooms 10 --senders 100 --rate 200 --paced-messages 60 --messages 1 > $OUT/$s-bench.txt 2>&1 &
  G=$!
  # wait for the paced phase to start
  for i in $(seq 600); do grep -q "paced:" $OUT/$s-bench.txt 2>/dev/null && break; sleep 0.2; done
  sleep 3
  perf record -F 2000 -g -p $P -o $OUT/$s.data -- sleep 12 2>$OUT/$s-perf.err
  wait $G
  kill $P; wait $P 2>/dev/null
  report $s
  rm -rf $D
done
