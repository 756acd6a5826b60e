#!/usr/bin/env bash
# A profile (perf record -g, sampled) of the paced phase, chatd and the bare server over TLS, with
# compare.sh's fan-out load (1,000 clients, 10 rooms, 100 senders, 200 msgs/s, here 30 s of it):
# per server, the share of samples by binary ($OUT/<server>-dso.txt), the hottest symbols
# ($OUT/<server>-top.txt) and the generator's summary ($OUT/<server>-bench.txt).
#
#   bash bench/perf-paced.sh                  # after cargo build --release -p chatd -p chatd-bench
#   SERVERS=chatd OUT=/tmp/p bash bench/perf-paced.sh
#   REPORT_ONLY=chatd bash bench/perf-paced.sh   # the reports again from $OUT/chatd.data
#   CHATD=/tmp/chatd-old SERVERS=chatd ...   # another chatd binary
#   STAT=1 bash bench/perf-paced.sh           # counts instead of samples: syscalls, context switches
#                                             # and wake-ups per delivery ($OUT/<server>-stat.txt)
set -u
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "perf-paced: needs perf (Debian: linux-perf)" >&2; exit 2; }
OUT=${OUT:-target/perf-paced/$(date +%Y%m%d-%H%M%S)}; mkdir -p $OUT
B=target/release
SECS=12   # how long the profile or the counts cover, inside the 30 s paced phase
report() {
  perf report -i $OUT/$1.data --no-children --sort dso --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -8 > $OUT/$1-dso.txt
  perf report -i $OUT/$1.data --no-children --sort sym --percent-limit 0.7 --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -45 > $OUT/$1-top.txt
}
# STAT=1: what the daemon asks of the kernel, counted by tracepoints over the same $SECS s, per
# delivery (the phase's deliveries/s from the generator's summary, times $SECS).
STAT_EVENTS=syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendto,syscalls:sys_enter_sendmsg,syscalls:sys_enter_read,syscalls:sys_enter_recvfrom,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex,sched:sched_switch,sched:sched_wakeup,raw_syscalls:sys_enter
# The CPU each thread used (utime + stime, clock ticks), as "tid name ticks" lines: a thread's name
# (tokio-rt-worker, chatd-store) says whose work it is.
thread_ticks() {
  local t
  for t in /proc/$1/task/*; do
    # stat: "tid (name) state ...": utime and stime are the 12th and 13th fields after the name
    awk '{ name = $0; sub(/^[0-9]+ \(/, "", name); sub(/\) [^)]*$/, "", name); gsub(/ /, "_", name)
           rest = $0; sub(/.*\) /, "", rest); split(rest, f, " "); print $1, name, f[12] + f[13] }' $t/stat 2>/dev/null
  done
}
per_delivery() {
  local rate hz
  rate=$(grep -o 'paced: .* = [0-9]* deliveries/s' $OUT/$1-bench.txt | grep -o '[0-9]* deliveries/s' | cut -d' ' -f1)
  hz=$(getconf CLK_TCK)
  local n=$((SECS * rate))   # deliveries over the counted seconds
  awk -F, -v n="$n" '$1 ~ /^[0-9]+$/ { printf "%-34s %12d %8.3f per delivery\n", $3, $1, $1 / n }' \
    $OUT/$1-stat.raw > $OUT/$1-stat.txt
  # CPU by thread name over those seconds, µs per delivery (threads that came and went are not counted)
  awk -v n="$n" -v hz="$hz" 'NR == FNR { start[$1] = $3; next }
    ($1 in start) { cpu[$2] += $3 - start[$1]; total += $3 - start[$1] }
    END { for (t in cpu) printf "cpu %-30s %12.2f µs per delivery\n", t, cpu[t] / hz * 1e6 / n
          printf "cpu %-30s %12.2f µs per delivery\n", "(all threads)", total / hz * 1e6 / n }' \
    $OUT/$1-threads.start $OUT/$1-threads.end >> $OUT/$1-stat.txt
  echo "$1 (paced at $rate deliveries/s):"; cat $OUT/$1-stat.txt
}
[ -n "${REPORT_ONLY:-}" ] && { report $REPORT_ONLY; exit; }
for s in ${SERVERS:-chatd bare}; do
  D=$(mktemp -d)
  if [ $s = chatd ]; then
    cp bench/configs/chatd-bench.toml $D/chatd.toml
    ${CHATD:-$B/chatd} --config $D/chatd.toml >$D/out 2>$D/err & P=$!
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
  if [ -n "${STAT:-}" ]; then
    thread_ticks $P > $OUT/$s-threads.start
    perf stat -x, -e "$STAT_EVENTS" -p $P -o $OUT/$s-stat.raw -- sleep $SECS 2>$OUT/$s-perf.err
    thread_ticks $P > $OUT/$s-threads.end
  else
    perf record -F 2000 -g -p $P -o $OUT/$s.data -- sleep $SECS 2>$OUT/$s-perf.err
  fi
  wait $G
  kill $P; wait $P 2>/dev/null
  if [ -n "${STAT:-}" ]; then per_delivery $s; else report $s; fi
  rm -rf $D
done
