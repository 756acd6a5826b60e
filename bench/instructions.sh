#!/usr/bin/env bash
# Instructions per delivery: a count that machine noise cannot move, for judging a change on the
# hot path (bench/compare.sh's CPU seconds vary by ±20% between runs on this shared VM).
#
#   bench/instructions.sh                   # SERVERS="chatd bare": chatd and the bare server
#   bench/instructions.sh bare              # one server; any of: chatd bare bare_wl before chatd_irc
#   CHATD_BEFORE=/tmp/chatd-old bench/instructions.sh chatd before     # a before/after pair
#   TLS=1 bench/instructions.sh             # with rustls in the count (default: plaintext)
#   CACHE_SIM=1 bench/instructions.sh       # also the simulated data-cache misses per delivery
#
# Each daemon runs under `valgrind --tool=callgrind --instr-atstart=no` (this machine's perf has
# no hardware counters: `perf stat -e instructions true` says <not supported>). chatd-bench
# connects and logs in a fixed fleet while callgrind counts nothing, then runs one paced
# (open-loop) fan-out phase; its --phase-hook switches callgrind's instrumentation on just before
# the phase and dumps the counts just after the last delivery. So the figure is the daemon's
# user-space instructions (all threads) for exactly that phase, divided by the deliveries:
# connection setup, TLS handshakes, logins (argon2) and shutdown are not in it. Kernel work
# (TCP, the write syscalls themselves) is not counted by callgrind: the write(2)-family calls per
# delivery (/proc/PID/io syscw over the phase) are printed beside it for that reason.
#
# Plaintext by default: under callgrind the CPU is emulated and ring picks its AES-GCM code by the
# CPUID valgrind shows (no AVX-512/VAES), so the crypto instructions counted are not necessarily the
# ones run natively; and they are the same per byte for every server, diluting the part a change
# to our own code moves. TLS=1 keeps rustls in (for changes to record batching or buffering).
#
# Fixed scenario (change it only to compare like with like): CLIENTS=100 in ROOMS=5 (20 members
# each), SENDERS=20 each posting MESSAGES=15 at RATE=20 msgs/s in total: 300 messages, 5,700
# deliveries, 15 s. The rate is low so the daemon keeps up even under callgrind's slowdown (tens
# of times): every delivery is then its own wake-up, as in compare.sh's paced phase (a daemon that falls
# behind batches, and the count would depend on the machine's speed again).
#
# Results: $OUT/<server>.json (chatd-bench's), $OUT/<server>.callgrind (the phase's dump: see
# where the instructions go with `callgrind_annotate $OUT/<server>.callgrind | head -40`), and a
# table on stdout and in $OUT/table.txt.
set -euo pipefail

# --- the phase hook (chatd-bench runs `instructions.sh --hook PID DIR` around the phase) --------
if [ "${1:-}" = --hook ]; then
    pid=$2 dir=$3
    syscw() { awk '/^syscw:/ {print $2}' "/proc/$pid/io"; }
    control() { # callgrind_control talks to the daemon through vgdb; quiet unless it fails
        local out
        out=$(callgrind_control "$@" "$pid" 2>&1) || { echo "callgrind_control $*: $out" >&2; exit 1; }
    }
    # The daemon's syscw is read after the commands at the start and before them at the end:
    # vgdb's own traffic with the valgrind process is not the daemon's.
    case "$CHATD_BENCH_EDGE" in
        start)
            control -z
            control -i on
            syscw >"$dir/syscw.start"
            ;;
        end)
            syscw >"$dir/syscw.end"
            echo "$CHATD_BENCH_DELIVERIES" >"$dir/deliveries"
            control -d "phase-$CHATD_BENCH_PHASE"
            control -i off
            ;;
    esac
    exit 0
fi

cd "$(dirname "$0")/.."
ROOT=$PWD
CLIENTS=${CLIENTS:-100} ROOMS=${ROOMS:-5} SENDERS=${SENDERS:-20} MESSAGES=${MESSAGES:-15} RATE=${RATE:-20}
SIZE=${SIZE:-64}
TLS=${TLS:-0}
PROFILE=${PROFILE:-release}           # the cargo profile whose binaries are measured
NO_BUILD=${NO_BUILD:-}                # 1: use the binaries in target/$PROFILE as they are
CHATD_BEFORE=${CHATD_BEFORE:-}        # a chatd binary measured as the server "before"
# chatd's IRC front end (chatd_irc): the TOML added to chatd-bench.toml to open its listeners.
# The keys are those of the IRC front end's [irc] section; a chatd without one refuses to start.
CHATD_IRC_TOML=${CHATD_IRC_TOML:-'[irc]
listen = "127.0.0.1:37694"
plain_listen = "127.0.0.1:37664"'}
CHATD_IRC_TLS_ADDR=${CHATD_IRC_TLS_ADDR:-127.0.0.1:37694}
CHATD_IRC_PLAIN_ADDR=${CHATD_IRC_PLAIN_ADDR:-127.0.0.1:37664}
OUT=${OUT:-$ROOT/target/bench-instructions/$(date +%Y%m%d-%H%M%S)}
if [ $# -gt 0 ]; then SERVERS="$*"; else SERVERS=${SERVERS:-"chatd bare"}; fi

# Ports of their own (not compare.sh's), so both can run at once.
CHATD_TLS_PORT=37697 CHATD_PLAIN_PORT=37667 BARE_TLS_PORT=47697 BARE_PLAIN_PORT=47667

BARE_ARGS=()
log() { printf '%s instructions: %s\n' "$(date +%T)" "$*" >&2; }

command -v valgrind >/dev/null && command -v callgrind_control >/dev/null || {
    log "needs valgrind (callgrind): apt-get install valgrind"
    exit 1
}

BIN=$ROOT/target/$PROFILE
if [ -z "$NO_BUILD" ]; then
    pkgs=(-p chatd-bench)
    case " $SERVERS " in *" chatd "* | *" chatd_irc "*) pkgs+=(-p chatd) ;; esac
    flag=(--profile "$PROFILE"); [ "$PROFILE" = debug ] && flag=()
    log "building ${pkgs[*]} ($PROFILE)"
    cargo build "${flag[@]}" "${pkgs[@]}"
fi
BENCH=$BIN/chatd-bench

mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/chatd-instructions.XXXXXX)
DAEMON_PID=
stop_daemon() {
    if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill "$DAEMON_PID" 2>/dev/null || true
        wait "$DAEMON_PID" 2>/dev/null || true
    fi
    DAEMON_PID=
}
cleanup() { stop_daemon; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# valgrind DIR BINARY ARGS...: the daemon under callgrind, counting nothing until the hook says.
grind() {
    local dir=$1; shift
    valgrind --tool=callgrind --instr-atstart=no ${CACHE_SIM:+--cache-sim=yes} \
        --callgrind-out-file="$dir/callgrind.out.%p" "$@" >"$dir/daemon.out" 2>"$dir/daemon.err" &
    DAEMON_PID=$!
}
wait_ready() { # dir pattern seconds
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        grep -q "$2" "$1/daemon.out" 2>/dev/null && return 0
        kill -0 "$DAEMON_PID" 2>/dev/null || break
        sleep 0.1
    done
    log "the daemon did not get ready; its stderr:"
    tail -20 "$1/daemon.err" >&2
    return 1
}

# start_<server> DIR: sets DAEMON_PID, ADDR, PROTO, TLSARGS.
start_chatd() {
    sed -e "s/36697/$CHATD_TLS_PORT/; s/36667/$CHATD_PLAIN_PORT/" "$ROOT/bench/configs/chatd-bench.toml" >"$1/chatd.toml"
    if [ -n "${EXTRA_TOML:-}" ]; then printf '\n%s\n' "$EXTRA_TOML" >>"$1/chatd.toml"; fi
    # Paths in the configuration (certs/, data/) are relative to its directory: a fresh one.
    grind "$1" "${CHATD_BIN:-$BIN/chatd}" --config "$1/chatd.toml" --log warn
    wait_ready "$1" 'chatd ready' 300 || return 1
    PROTO=chatd
    if [ "$TLS" = 1 ]; then
        ADDR=127.0.0.1:$CHATD_TLS_PORT TLSARGS=(--tls --ca "$1/certs/ca.pem")
    else
        ADDR=127.0.0.1:$CHATD_PLAIN_PORT TLSARGS=()
    fi
}
start_before() {
    [ -x "$CHATD_BEFORE" ] || { log "CHATD_BEFORE is not an executable chatd"; return 1; }
    CHATD_BIN=$CHATD_BEFORE start_chatd "$1" || return 1
}
# chatd's IRC front end: the same daemon and configuration plus CHATD_IRC_TOML, spoken to with
# --proto irc. chatd lets only accounts join: each client registers its account first
# (--irc-register: draft/account-registration), as compare.sh's chatdirc does.
start_chatd_irc() {
    EXTRA_TOML=$CHATD_IRC_TOML start_chatd "$1" || return 1
    PROTO=irc BENCH_ARGS=(--irc-register)
    if [ "$TLS" = 1 ]; then ADDR=$CHATD_IRC_TLS_ADDR; else ADDR=$CHATD_IRC_PLAIN_ADDR; fi
}
start_bare() {
    local tls=()
    if [ "$TLS" = 1 ]; then
        make_cert || return 1
        tls=(--tls-listen 127.0.0.1:$BARE_TLS_PORT --cert "$WORK/cert.pem" --key "$WORK/key.pem")
    fi
    grind "$1" "$BIN/chatd-bare" --plain-listen 127.0.0.1:$BARE_PLAIN_PORT "${tls[@]}" "${BARE_ARGS[@]}"
    wait_ready "$1" 'chatd-bare ready' 120 || return 1
    PROTO=irc
    if [ "$TLS" = 1 ]; then
        ADDR=127.0.0.1:$BARE_TLS_PORT TLSARGS=(--tls --ca "$WORK/ca.pem")
    else
        ADDR=127.0.0.1:$BARE_PLAIN_PORT TLSARGS=()
    fi
}
# The bare server with one writer task per worker thread instead of one per connection.
start_bare_wl() {
    BARE_ARGS=(--write-loop)
    start_bare "$1" || { BARE_ARGS=(); return 1; }
    BARE_ARGS=()
}
make_cert() {
    [ -f "$WORK/cert.pem" ] && return 0
    source "$ROOT/bench/localhost-cert.sh"
    localhost_cert "$WORK"
}

rows=()
status=0
for s in $SERVERS; do
    declare -F "start_$s" >/dev/null || { log "unknown server $s (chatd bare bare_wl before chatd_irc)"; exit 2; }
    dir=$WORK/$s
    mkdir -p "$dir"
    log "$s: starting under callgrind"
    BENCH_ARGS=()
    if ! "start_$s" "$dir"; then
        log "$s: did not start (see above); skipped"
        stop_daemon
        status=1
        continue
    fi
    log "$s: $CLIENTS clients, $ROOMS rooms, $SENDERS senders x $MESSAGES messages at $RATE msgs/s ($PROTO, TLS=$TLS)"
    if ! "$BENCH" --proto "$PROTO" --addr "$ADDR" "${TLSARGS[@]}" "${BENCH_ARGS[@]}" --pid "$DAEMON_PID" --prefix n \
        --concurrency 16 --setup-timeout 300 --timeout 900 --json "$OUT/$s.json" \
        fanout --clients "$CLIENTS" --rooms "$ROOMS" --senders "$SENDERS" --messages "$MESSAGES" \
        --rate "$RATE" --size "$SIZE" --drain 30 \
        --phase-hook "bash '$ROOT/bench/instructions.sh' --hook $DAEMON_PID '$dir'"; then
        log "$s: chatd-bench reported a problem (lost deliveries or errors): its figure is not comparable"
        status=3
    fi
    dump=$(ls -v "$dir"/callgrind.out.*.[0-9]* 2>/dev/null | tail -1)
    stop_daemon
    [ -n "$dump" ] || { log "$s: no callgrind dump (did the phase run?)"; status=1; continue; }
    cp "$dump" "$OUT/$s.callgrind"
    ir=$(awk '/^summary:/ {print $2}' "$dump")
    n=$(cat "$dir/deliveries")
    writes=$(($(cat "$dir/syscw.end") - $(cat "$dir/syscw.start")))
    row=$(awk -v s="$s" -v n="$n" -v ir="$ir" -v w="$writes" 'BEGIN {
        printf "%-10s %10d %16.0f %14.0f %12.2f", s, n, ir, (n > 0 ? ir / n : 0), (n > 0 ? w / n : 0) }')
    if [ -n "${CACHE_SIM:-}" ]; then # the events line names the summary's columns
        row+=$(awk -v n="$n" '/^events:/ { for (i = 2; i <= NF; i++) col[$i] = i }
            /^summary:/ { printf " %12.1f %12.1f", ($col["D1mr"] + $col["D1mw"]) / n, ($col["DLmr"] + $col["DLmw"]) / n }' "$dump")
    fi
    rows+=("$row")
done

{
    echo "instructions per delivery (callgrind, daemon user space, the paced phase only): $(date -u +%FT%TZ)"
    echo "$CLIENTS clients, $ROOMS rooms, $SENDERS senders x $MESSAGES messages at $RATE msgs/s, ${SIZE}-byte messages, TLS=$TLS, profile $PROFILE"
    printf '%-10s %10s %16s %14s %12s' server deliveries instructions 'per delivery' 'writes/deliv'
    if [ -n "${CACHE_SIM:-}" ]; then printf ' %12s %12s' 'D1 miss/dl' 'LL miss/dl'; fi
    echo
    for r in "${rows[@]}"; do echo "$r"; done
    echo "(writes/deliv: the daemon's write(2)-family syscalls over the phase, /proc/PID/io syscw: socket writes and"
    echo " tokio's eventfd wake-ups of parked workers, more of them under valgrind than natively; the kernel's work is"
    echo " not in the instruction count)"
    if [ -n "${CACHE_SIM:-}" ]; then
        echo "(D1 / LL miss/dl: valgrind's simulated first-level data and last-level cache misses, reads and writes,"
        echo " per delivery, with the cache sizes valgrind takes from this CPU: a model, not the hardware's counters)"
    fi
} | tee "$OUT/table.txt"
exit $status
