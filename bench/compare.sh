#!/usr/bin/env bash
# Side-by-side: chatd (TLS, durable history in SQLite) against ngIRCd and InspIRCd (as they come:
# no history, nothing stored), same generator, same workloads, several alternating rounds; and
# against chatd-bare (bench/src/bin/bare.rs: tokio + rustls and the IRC subset the generator
# speaks, nothing else), the limit of chatd's stack on this machine, measured in the same run.
#
#   bench/compare.sh                     # ROUNDS=3 by default
#   ROUNDS=5 IDLE_N=10000 bench/compare.sh
#   SERVERS="chatd bare" bench/compare.sh   # chatd against the limit only
#   (chatdirc is chatd driven over its IRC front end: the same IRC load as ngIRCd and InspIRCd)
#   CHATD_BEFORE=/tmp/chatd-old SERVERS="chatd before" bench/compare.sh
#                                        # a before/after comparison: another chatd binary as a column
#
# Every daemon runs in the foreground as a child of this script, on 127.0.0.1 and non-default
# ports, with a fresh temporary directory (chatd: fresh database) for each round, and is killed
# after its round. Results: $OUT/r<round>-<server>-<scenario>.json, then a table of medians.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ROUNDS=${ROUNDS:-3}
TLS=${TLS:-1}                         # 1: everything over TLS; 0: plaintext (chatd's plain_listen)
SERVERS=${SERVERS:-"chatd chatdirc ngircd inspircd bare"}
# Fan-out workload: C clients in R rooms, S senders; paced phase then closed-loop burst.
FAN_C=${FAN_C:-1000} FAN_R=${FAN_R:-10} FAN_S=${FAN_S:-100}
PACED_RATE=${PACED_RATE:-200}         # messages/s in total (x ~99 deliveries each)
PACED_M=${PACED_M:-20}                # messages per sender in the paced phase
BURST_M=${BURST_M:-200}               # messages per sender in the burst phase
WINDOW=${WINDOW:-8}
IDLE_N=${IDLE_N:-5000}
THREADS=${THREADS:-1}                 # generator threads
OUT=${OUT:-$ROOT/target/bench-compare/$(date +%Y%m%d-%H%M%S)}
TIMEOUT=${TIMEOUT:-900}
CHATD_BEFORE=${CHATD_BEFORE:-}        # a chatd binary served as the column "before"

CHATD_TLS_PORT=36697 CHATD_PLAIN_PORT=36667 CHATD_IRC_TLS_PORT=36699 CHATD_IRC_PLAIN_PORT=36669
NGIRCD_PLAIN_PORT=16667 NGIRCD_TLS_PORT=16697
INSP_PLAIN_PORT=26667 INSP_TLS_PORT=26697
BARE_PLAIN_PORT=46667 BARE_TLS_PORT=46697

BARE_ARGS=()
log() { printf '%s compare: %s\n' "$(date +%T)" "$*" >&2; }

# --- install the peers (Debian packages) if missing -------------------------------------------
need=()
[ -x /usr/sbin/ngircd ] || need+=(ngircd)
[ -x /usr/sbin/inspircd ] || need+=(inspircd)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

log "building release binaries"
cargo build --release -p chatd -p chatd-bench
BENCH=$ROOT/target/release/chatd-bench
BARE=$ROOT/target/release/chatd-bare
CHATD=$ROOT/target/release/chatd

mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/chatd-compare.XXXXXX)
chmod 755 "$WORK"
DAEMON_PID=
cleanup() {
    if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill "$DAEMON_PID" 2>/dev/null || true
        wait "$DAEMON_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- a CA and a localhost certificate for the IRC daemons' TLS ports ---------------------------
source "$ROOT/bench/localhost-cert.sh"
localhost_cert "$WORK" irc-
chmod 644 "$WORK"/irc-*.pem   # ngIRCd drops to nobody

wait_port() { # port seconds
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$DAEMON_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# start_<server> DIR: starts it in the foreground (as our child), sets DAEMON_PID, ADDR, TLSARGS, CONC
# (and AUTHARGS: what the generator needs to log in, if anything).
start_chatd() {
    cp "$ROOT/bench/configs/chatd-bench.toml" "$1/chatd.toml"
    if [ -n "${IRC_SECTION:-}" ]; then printf '%s' "$IRC_SECTION" >>"$1/chatd.toml"; fi
    "${CHATD_BIN:-$CHATD}" --config "$1/chatd.toml" >"$1/chatd.out" 2>"$1/chatd.err" &
    DAEMON_PID=$!
    local i
    for ((i = 0; i < 300; i++)); do
        grep -q 'chatd ready' "$1/chatd.out" 2>/dev/null && break
        kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$1/chatd.err" >&2; return 1; }
        sleep 0.1
    done
    grep -q 'chatd ready' "$1/chatd.out" || { log "chatd did not get ready"; return 1; }
    if [ "$TLS" = 1 ]; then
        ADDR=127.0.0.1:$CHATD_TLS_PORT TLSARGS=(--tls --ca "$1/certs/ca.pem")
    else
        ADDR=127.0.0.1:$CHATD_PLAIN_PORT TLSARGS=()
    fi
    PROTO=chatd CONC=256 AUTHARGS=()
}
start_chatdirc() {
    IRC_SECTION=$(printf '\n[irc]\nlisten = "127.0.0.1:%s"\nplain_listen = "127.0.0.1:%s"\n' \
        "$CHATD_IRC_TLS_PORT" "$CHATD_IRC_PLAIN_PORT") start_chatd "$1" || return 1
    if [ "$TLS" = 1 ]; then
        ADDR=127.0.0.1:$CHATD_IRC_TLS_PORT TLSARGS=(--tls --ca "$1/certs/ca.pem")
    else
        ADDR=127.0.0.1:$CHATD_IRC_PLAIN_PORT TLSARGS=()
    fi
    # chatd lets only accounts join: each client registers one (draft/account-registration).
    PROTO=irc CONC=256 AUTHARGS=(--irc-register)
}
start_before() {
    [ -x "$CHATD_BEFORE" ] || { log "CHATD_BEFORE is not an executable chatd"; return 1; }
    CHATD_BIN=$CHATD_BEFORE start_chatd "$1"
}
irc_conf() { # name dir plain tls
    sed -e "s|@DIR@|$2|g" -e "s|@PLAIN_PORT@|$3|g" -e "s|@TLS_PORT@|$4|g" \
        "$ROOT/bench/configs/$1.conf" >"$2/$1.conf"
    cp "$WORK"/irc-cert.pem "$WORK"/irc-key.pem "$2/"
    chmod 755 "$2"
}
irc_target() { # plain tls
    if [ "$TLS" = 1 ]; then ADDR=127.0.0.1:$2 TLSARGS=(--tls --ca "$WORK/irc-ca.pem"); else ADDR=127.0.0.1:$1 TLSARGS=(); fi
    PROTO=irc AUTHARGS=()
}
start_ngircd() {
    irc_conf ngircd "$1" $NGIRCD_PLAIN_PORT $NGIRCD_TLS_PORT
    /usr/sbin/ngircd --nodaemon --config "$1/ngircd.conf" >"$1/ngircd.log" 2>&1 &
    DAEMON_PID=$!
    wait_port $NGIRCD_TLS_PORT 10 || { cat "$1/ngircd.log" >&2; return 1; }
    irc_target $NGIRCD_PLAIN_PORT $NGIRCD_TLS_PORT
    CONC=8   # ngIRCd listens with a backlog of 10: more parallel connects lose SYNs (1 s retries)
}
start_inspircd() {
    irc_conf inspircd "$1" $INSP_PLAIN_PORT $INSP_TLS_PORT
    local asroot=(); [ "$(id -u)" = 0 ] && asroot=(--runasroot)
    /usr/sbin/inspircd --nofork --nopid "${asroot[@]}" --config "$1/inspircd.conf" >"$1/inspircd.out" 2>&1 &
    DAEMON_PID=$!
    wait_port $INSP_TLS_PORT 10 || { cat "$1/inspircd.out" >&2; return 1; }
    irc_target $INSP_PLAIN_PORT $INSP_TLS_PORT
    CONC=512 # InspIRCd completes registrations on a 1 s tick: many must be in flight
}
start_bare() {
    # The throwaway CA's localhost certificate, as for the IRC daemons; one worker per core (as chatd).
    "$BARE" --tls-listen 127.0.0.1:$BARE_TLS_PORT --plain-listen 127.0.0.1:$BARE_PLAIN_PORT \
        --cert "$WORK/irc-cert.pem" --key "$WORK/irc-key.pem" "${BARE_ARGS[@]}" >"$1/bare.out" 2>"$1/bare.err" &
    DAEMON_PID=$!
    wait_port $BARE_TLS_PORT 10 || { cat "$1/bare.err" >&2; return 1; }
    irc_target $BARE_PLAIN_PORT $BARE_TLS_PORT
    CONC=256
}
# The bare server with one writer task per worker thread instead of one per connection (the
# per-worker write loop of issue 12, at the limit of the stack): SERVERS="chatd bare barewl".
start_barewl() {
    BARE_ARGS=(--write-loop)
    start_bare "$1" || { BARE_ARGS=(); return 1; }
    BARE_ARGS=()
}
stop_daemon() {
    if [ -n "$DAEMON_PID" ]; then
        kill "$DAEMON_PID" 2>/dev/null || true
        wait "$DAEMON_PID" 2>/dev/null || true
        DAEMON_PID=
    fi
}

bench() { # round server scenario args...
    local r=$1 s=$2 scen=$3; shift 3
    log "round $r: $s $scen"
    "$BENCH" --proto "$PROTO" --addr "$ADDR" "${TLSARGS[@]}" "${AUTHARGS[@]}" --pid "$DAEMON_PID" --threads "$THREADS" \
        --concurrency "$CONC" --timeout "$TIMEOUT" --json "$OUT/r$r-$s-$scen.json" "$@" "$scen" "${SCEN_ARGS[@]}" \
        || log "round $r: $s $scen reported a problem (exit $?), see $OUT/r$r-$s-$scen.json"
}

read -r -a servers <<<"$SERVERS"
log "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); results in $OUT"
for ((r = 1; r <= ROUNDS; r++)); do
    # Rotate the order each round so drift in machine load spreads over all servers.
    n=${#servers[@]}
    for ((k = 0; k < n; k++)); do
        s=${servers[$(((k + r - 1) % n))]}
        # A fresh daemon (fresh directory, fresh chatd database) for each scenario, so memory
        # left over from the fan-out does not count against (or hide in) the idle figure.
        mkdir -p "$WORK/r$r-$s-fanout" "$WORK/r$r-$s-idle"
        "start_$s" "$WORK/r$r-$s-fanout"
        SCEN_ARGS=(--clients "$FAN_C" --rooms "$FAN_R" --senders "$FAN_S" --rate "$PACED_RATE"
            --paced-messages "$PACED_M" --messages "$BURST_M" --window "$WINDOW" --burst)
        bench "$r" "$s" fanout --prefix f
        stop_daemon
        "start_$s" "$WORK/r$r-$s-idle"
        SCEN_ARGS=(--clients "$IDLE_N")
        bench "$r" "$s" idle --prefix i
        stop_daemon
    done
done

{
    echo "chatd-bench compare: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%FT%TZ)"
    echo "chatd: TLS=$TLS, every message stored durably (SQLite WAL, fsync'd group commit) before its ack."
    echo "ngIRCd $(/usr/sbin/ngircd --version 2>/dev/null | head -1 | awk '{print $2}' || true), InspIRCd $(dpkg-query -W -f '${Version}' inspircd 2>/dev/null || true): as they come (no history, nothing stored), TLS=$TLS, flood limits off."
    echo "bare: chatd-bare (tokio + rustls, the IRC subset of the generator, reader + writer task per connection, nothing stored, no limits), TLS=$TLS: the limit of chatd's stack."
    echo "barewl (if run): chatd-bare --write-loop (one writer task per worker thread writes all its connections)."
    echo "fan-out: $FAN_C clients, $FAN_R rooms, $FAN_S senders; paced $PACED_RATE msgs/s x $PACED_M per sender, burst $BURST_M per sender (window $WINDOW); idle: $IDLE_N connections"
    "$BENCH" report "$OUT"
} | tee "$OUT/table.txt"
