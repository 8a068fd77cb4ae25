#!/usr/bin/env bash
# Wisp benchmark: wispd against a hand-written Paho relay (and optionally Node-RED 4), all
# running the same transform (bench/in -> +temp_f, +alert -> bench/out) against ONE private
# mosquitto on a free 127.0.0.1 port. Prints figures, never pass/fail.
#
#   scripts/bench.sh [--duration S] [--runs N] [--out FILE] [--with-node-red] [--keep]
#   scripts/bench.sh --smoke          (ctest "bench_smoke": relay + loadgen ~1 s, messages flowed?)
#
# Figures (relay, wispd, wispd/relay, and node-red, node-red/relay):
#   throughput      QoS 0, 64 in flight, --duration s (default 5), median of --runs (default 3);
#                   wispd runs the transform as a Lua function and, in the same rounds, as a
#                   native C function (tests/bench/native/transform): native msg/s and native/Lua
#   latency         QoS 0, 1 in flight, 2000 messages after 100 warmup: p50, p99, added p50
#   startup         process start to the first output of a probe sent every 2 ms, median and
#                   min of 5 (wispd: a fresh data dir each time)
#   durable         QoS 1, 64 in flight: relay and Node-RED at QoS 1 vs wispd with a durable
#                   trigger (inbox, outbox, metering in LMDB) in batch and sync durability,
#                   and wispd's fsyncs per event; plus the ceiling: the same transform on
#                   wispd's MQTT client with nothing else (tests/bench/ceiling.c), i.e. what
#                   the broker and the load generator leave on this machine for any client
#   cold start      wispd with executors.idle_timeout_ms=200: first event after 600 ms idle
#                   vs the warm event right after it, median of 10 (wispd only)
#   idle PSS        after every function served one event: wispd with the 10 bench functions
#                   (wispd + all descendants), the relay, Node-RED; per-process breakdown
#
# Environment: BUILD_DIR (default build-bench), WISPD (default $BUILD_DIR/runtime/wispd),
# WISPD_ARGS (extra wispd flags), NODE_RED_DIR (an existing `npm install --prefix` of
# node-red@4 to reuse instead of a fresh install into a temp dir).
# Default run (no Node-RED) stays under ~3 minutes.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build-bench}
DURATION=5
RUNS=3
OUT=
WITH_NR=0
SMOKE=0
KEEP=0
LAT_COUNT=2000
STARTS=5
COLD_N=10
COLD_IDLE_TIMEOUT_MS=200

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
    case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --with-node-red) WITH_NR=1; shift ;;
    --smoke) SMOKE=1; shift ;;
    --keep) KEEP=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
[[ $DURATION =~ ^[0-9]+([.][0-9]+)?$ && $RUNS =~ ^[1-9][0-9]*$ ]] ||
    { echo "bench: --duration needs seconds and --runs a positive count" >&2; exit 2; }
OUT=${OUT:-$BUILD/bench-results.txt}

say() { echo "bench: $*" >&2; }

# ---------------------------------------------------------------- processes and cleanup
# Every process stays in this session: with sched_autogroup, a setsid'd target would get its
# own CPU share against loadgen + broker, and the figures would depend on how it was started.
# Targets get their own process group though (in_own_pgrp), so that a signal a target sends to
# its group (kill(0, ...)) does not reach this script, and Ctrl-C reaches them only through
# the EXIT trap.
in_own_pgrp() {
    exec perl -e 'setpgrp(0, 0); exec { $ARGV[0] } @ARGV or die "exec $ARGV[0]: $!\n"' -- "$@"
}
# shellcheck source=../tests/lib/broker.sh
source "$ROOT/tests/lib/broker.sh"
test_tmp_init # $TEST_TMP; its trap is replaced by ours below

BENCH_PIDS=()

# Prints PID and all its descendants (executors are grandchildren), parents first.
descendants() {
    local root=$1 f line rest pid ppid
    local -A kids=()
    for f in /proc/[0-9]*/stat; do
        { read -r line <"$f"; } 2>/dev/null || continue
        pid=${line%% *}
        rest=${line##*) }
        read -r _ ppid _ <<<"$rest"
        kids[$ppid]+="$pid "
    done
    local queue=("$root") i=0
    while ((i < ${#queue[@]})); do
        pid=${queue[i]}
        i=$((i + 1))
        [[ -d /proc/$pid ]] && echo "$pid"
        for f in ${kids[$pid]:-}; do queue+=("$f"); done
    done
}

# True while PID runs (a zombie does not count).
alive() {
    local line
    { read -r line <"/proc/$1/stat"; } 2>/dev/null || return 1
    line=${line##*) }
    [[ ${line:0:1} != Z ]]
}

# TERM a process and everything below it, KILL what is left after 3 s, reap.
kill_tree() {
    local pid=$1 p i
    local tree
    tree=$(descendants "$pid")
    for p in $tree; do kill -TERM "$p" 2>/dev/null || true; done
    for ((i = 0; i < 60; i++)); do
        local left=0
        for p in $tree; do alive "$p" && left=1; done
        ((left)) || break
        sleep 0.05
    done
    for p in $tree; do kill -KILL "$p" 2>/dev/null || true; done
    wait "$pid" 2>/dev/null || true
}

bench_cleanup() {
    local rc=$?
    set +e
    trap - INT TERM
    for pid in "${BENCH_PIDS[@]}"; do kill_tree "$pid"; done
    BENCH_PIDS=()
    if ((KEEP)); then
        say "kept logs and data in $TEST_TMP"
        TEST_TMP=
    fi
    test_cleanup # the broker, $TEST_TMP
    exit "$rc"
}
trap bench_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- helpers
# (Only broker_start, test_tmp_init and test_cleanup come from tests/lib/broker.sh.)

# poll SECS CMD...: runs CMD every 50 ms until it succeeds (0) or SECS pass (1).
poll() {
    local secs=$1 i
    shift
    for ((i = 0; i < secs * 20; i++)); do
        if "$@"; then return 0; fi
        sleep 0.05
    done
    return 1
}

# A TCP port in 20000-60000 that nothing listens on right now.
free_port() {
    local p i
    for ((i = 0; i < 100; i++)); do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 40001))
        if [[ -z $(ss -Hltn "sport = :$p" 2>/dev/null) ]]; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# kv KEY "LINE": the value of KEY=value in a loadgen result line, or n/a.
kv() {
    local k=$1 w
    for w in $2; do
        if [[ $w == "$k="* ]]; then
            echo "${w#*=}"
            return 0
        fi
    done
    echo n/a
}

isnum() { [[ $1 =~ ^-?[0-9]+([.][0-9]+)?$ ]]; }

median() {
    local v nums=()
    for v in "$@"; do isnum "$v" && nums+=("$v"); done
    if ((${#nums[@]} == 0)); then
        echo n/a
        return
    fi
    printf '%s\n' "${nums[@]}" | sort -g |
        awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}'
}

# ratio A B: A/B as "1.23x", or "-" when either is missing.
ratio() {
    if isnum "$1" && isnum "$2" && awk -v b="$2" 'BEGIN{exit !(b != 0)}'; then
        awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2fx\n", a/b}'
    else
        echo -
    fi
}

diff_of() {
    if isnum "$1" && isnum "$2"; then
        awk -v a="$1" -v b="$2" 'BEGIN{printf "%+.1f\n", a-b}'
    else
        echo -
    fi
}

lg() { "$LOADGEN" --broker "$BROKER_URI" "$@"; }

# Waits until PID's pipeline answers a probe (any output on bench/out); 1 if PID dies first.
wait_ready() {
    local pid=$1 secs=${2:-30} i
    for ((i = 0; i < secs; i++)); do
        alive "$pid" || return 1
        if lg --probe --timeout-ms 1000 >/dev/null 2>&1; then return 0; fi
    done
    return 1
}

# Sets PSS_TOTAL, USS_TOTAL (private pages) and RSS_TOTAL (kB) summed over PID and its
# descendants, and PSS_DETAIL to the per-process breakdown (not in a subshell: sets globals).
# PSS splits shared pages among every process mapping them, so it moves with whatever else runs
# on the machine; USS (Private_Clean + Private_Dirty) does not.
pss_tree() {
    local pid=$1 p vals rss pss uss comm
    PSS_TOTAL=0 USS_TOTAL=0 RSS_TOTAL=0 PSS_DETAIL=
    for p in $(descendants "$pid"); do
        vals=$(awk '/^Rss:/ {r=$2} /^Pss:/ {p=$2} /^Private_(Clean|Dirty):/ {u+=$2}
                    END {if (p != "") print r, p, u}' "/proc/$p/smaps_rollup" 2>/dev/null || true)
        [[ -n $vals ]] || continue
        read -r rss pss uss <<<"$vals"
        comm=$(cat "/proc/$p/comm" 2>/dev/null || echo '?')
        PSS_TOTAL=$((PSS_TOTAL + pss)) USS_TOTAL=$((USS_TOTAL + uss)) RSS_TOTAL=$((RSS_TOTAL + rss))
        PSS_DETAIL+=$(printf '    pid %-7s %-16s PSS %7s kB  USS %7s kB  RSS %7s kB' "$p" "$comm" "$pss" "$uss" "$rss")$'\n'
    done
}

declare -A R=() # results: R[target.figure]
RAW=()          # raw loadgen lines for the results file
record_raw() { RAW+=("$1 $2"); }

# ---------------------------------------------------------------- binaries
if ((SMOKE)); then
    RELAY=${WISP_RELAY:-$BUILD/tests/wisp-relay}
    LOADGEN=${WISP_LOADGEN:-$BUILD/tests/wisp-loadgen}
else
    if ! "$ROOT/scripts/install-deps.sh" >&2; then
        say "install-deps.sh failed; going on with what is installed"
    fi
    RELAY=$BUILD/tests/wisp-relay
    LOADGEN=$BUILD/tests/wisp-loadgen
    CEILING=$BUILD/tests/wisp-ceiling
    say "building wisp-relay, wisp-ceiling and wisp-loadgen (Release) in $BUILD"
    if ! cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DWISP_TESTS=ON >"$TEST_TMP/build.log" 2>&1 ||
        ! cmake --build "$BUILD" -j"$(nproc)" --target wisp-relay wisp-ceiling wisp-loadgen >>"$TEST_TMP/build.log" 2>&1; then
        tail -30 "$TEST_TMP/build.log" >&2
        [[ -x $RELAY && -x $LOADGEN ]] || { say "building the benchmark programs failed"; exit 1; }
        say "WARNING: the build failed (log above); using the wisp-relay and wisp-loadgen already in $BUILD"
    fi
    if [[ -z ${WISPD:-} ]]; then
        WISPD=$BUILD/runtime/wispd
        cmake --build "$BUILD" -j"$(nproc)" --target wispd >"$TEST_TMP/build-wispd.log" 2>&1 ||
            say "building wispd failed (tail of the log below); wispd figures will be skipped"$'\n'"$(tail -5 "$TEST_TMP/build-wispd.log")"
    fi
    cmake --build "$BUILD" -j"$(nproc)" --target wisp-bench-native-transform >"$TEST_TMP/build-native.log" 2>&1 ||
        say "building the native transform failed (tail of the log below); its row will be skipped"$'\n'"$(tail -5 "$TEST_TMP/build-native.log")"
fi
[[ -x $RELAY && -x $LOADGEN ]] || { say "missing $RELAY or $LOADGEN"; exit 1; }

broker_start "set_tcp_nodelay true" "max_queued_messages 100000" ||
    { say "could not start mosquitto"; exit 1; }
say "mosquitto on $BROKER_URI"

# start_transform PROGRAM NAME: the relay or the ceiling client at QoS ${RELAY_QOS:-0}, until it
# prints "ready"; sets RELAY_PID.
start_transform() {
    in_own_pgrp "$1" --broker "$BROKER_URI" --qos "${RELAY_QOS:-0}" >"$TEST_TMP/$2.out" 2>>"$TEST_TMP/$2.err" &
    RELAY_PID=$!
    BENCH_PIDS+=("$RELAY_PID")
    poll 10 grep -qs '^ready$' "$TEST_TMP/$2.out" || { cat "$TEST_TMP/$2.err" >&2; return 1; }
}
start_relay() { start_transform "$RELAY" relay; }

# ---------------------------------------------------------------- smoke test
if ((SMOKE)); then
    start_relay || { echo "FAIL: bench_smoke: relay never ready" >&2; exit 1; }
    line=$(lg --inflight 8 --duration 1 --warmup 20) || true
    echo "$line"
    rec=$(kv received "$line")
    bad=$(kv bad "$line")
    if isnum "$rec" && ((rec > 0)) && [[ $bad == 0 ]]; then
        echo "PASS: bench_smoke ($rec messages through the relay, none malformed)"
        exit 0
    fi
    echo "FAIL: bench_smoke: no well-formed messages flowed" >&2
    cat "$TEST_TMP/relay.err" "$BROKER_LOG" >&2 || true
    exit 1
fi

# ---------------------------------------------------------------- wispd and Node-RED
WISPD_OK=0
WISPD_WHY=
if [[ ! -x ${WISPD:-} ]]; then
    WISPD_WHY="no wispd binary at ${WISPD:-?}"
elif ! "$WISPD" --help >/dev/null 2>&1; then
    WISPD_WHY="\`$WISPD --help\` failed"
else
    WISPD_OK=1
fi
((WISPD_OK)) || say "SKIPPING wispd figures: $WISPD_WHY"
read -r -a WISPD_EXTRA <<<"${WISPD_ARGS:-}"

# One function folder holding only the transform (throughput, latency, startup, cold start);
# the PSS figure uses all ten bench functions.
FN_ONE=$TEST_TMP/fn-transform
mkdir -p "$FN_ONE"
cp -r "$ROOT/tests/bench/functions/transform" "$FN_ONE/"
FN_ALL=$ROOT/tests/bench/functions
# The same transform as a native C function (handler.so built by CMake into the build tree).
FN_NATIVE=$TEST_TMP/fn-native
NATIVE_OK=0
if [[ -f $BUILD/tests/bench/native/transform/handler.so ]]; then
    mkdir -p "$FN_NATIVE"
    cp -r "$BUILD/tests/bench/native/transform" "$FN_NATIVE/"
    NATIVE_OK=1
elif ((WISPD_OK)); then
    say "no $BUILD/tests/bench/native/transform/handler.so: SKIPPING the native handler row"
fi
echo '{"executors": {"idle_timeout_ms": '"$COLD_IDLE_TIMEOUT_MS"'}}' >"$TEST_TMP/cold.json"

WISPD_N=0
# wispd_cmd FUNCDIR [wispd flags...]: sets CMD to a wispd command line with a fresh data dir.
wispd_cmd() {
    local fdir=$1
    shift
    WISPD_N=$((WISPD_N + 1))
    mkdir -p "$TEST_TMP/data-$WISPD_N"
    CMD=("$WISPD" --functions "$fdir" --broker "$BROKER_URI" --data "$TEST_TMP/data-$WISPD_N"
        --log-level warn "$@" "${WISPD_EXTRA[@]}")
}

start_wispd() {
    wispd_cmd "$@"
    in_own_pgrp "${CMD[@]}" >>"$TEST_TMP/wispd.log" 2>&1 &
    WISPD_PID=$!
    BENCH_PIDS+=("$WISPD_PID")
    wait_ready "$WISPD_PID" 30 || { tail -20 "$TEST_TMP/wispd.log" >&2; return 1; }
}

NR_OK=0
NR_VERSION=
if ((WITH_NR)); then
    NR_DIR=${NODE_RED_DIR:-$TEST_TMP/node-red-pkg}
    if [[ -f $NR_DIR/node_modules/node-red/red.js ]]; then
        say "using the Node-RED already installed in $NR_DIR"
    else
        say "installing node-red@4 from npm into $NR_DIR"
        mkdir -p "$NR_DIR"
        if ! command -v npm >/dev/null; then
            say "npm is not installed: SKIPPING Node-RED figures"
        elif ! timeout --foreground 600 npm install --prefix "$NR_DIR" --no-audit --no-fund --loglevel=error \
            node-red@4 >"$TEST_TMP/npm.log" 2>&1; then
            tail -20 "$TEST_TMP/npm.log" >&2
            say "npm install node-red@4 FAILED (log above): SKIPPING Node-RED figures"
        fi
    fi
    if [[ -f $NR_DIR/node_modules/node-red/red.js ]]; then
        NR_OK=1
        NR_VERSION=$(node -p "require('$NR_DIR/node_modules/node-red/package.json').version" 2>/dev/null || echo '?')
    fi
fi
NR_N=0
# nr_cmd: sets CMD to a Node-RED command line with a fresh user dir and HTTP port.
nr_cmd() {
    NR_N=$((NR_N + 1))
    local ud=$TEST_TMP/nr-user-$NR_N port
    mkdir -p "$ud"
    cp "${NR_FLOWS:-$ROOT/tests/bench/node-red/flows.json}" "$ud/flows.json"
    port=$(free_port)
    CMD=(env BENCH_NR_PORT="$port" BENCH_NR_USERDIR="$ud" BENCH_BROKER_PORT="$BROKER_PORT"
        node "$NR_DIR/node_modules/node-red/red.js" --settings "$ROOT/tests/bench/node-red/settings.js")
}

start_nr() {
    nr_cmd
    in_own_pgrp "${CMD[@]}" >>"$TEST_TMP/node-red.log" 2>&1 &
    NR_PID=$!
    BENCH_PIDS+=("$NR_PID")
    wait_ready "$NR_PID" 60 || { tail -20 "$TEST_TMP/node-red.log" >&2; return 1; }
}

stop_pid_tree() {
    local pid=$1 p keep=()
    kill_tree "$pid"
    for p in "${BENCH_PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    BENCH_PIDS=("${keep[@]}")
}

# start_target NAME FUNCDIR: starts relay, wispd (with FUNCDIR) or node-red; sets pid.
start_target() {
    case $1 in
    relay) start_relay || return 1; pid=$RELAY_PID ;;
    wispd) start_wispd "$2" || return 1; pid=$WISPD_PID ;;
    wispd-native) start_wispd "$FN_NATIVE" || return 1; pid=$WISPD_PID ;;
    node-red) start_nr || return 1; pid=$NR_PID ;;
    esac
}

TARGETS=(relay)
((WISPD_OK)) && TARGETS+=(wispd)
((NR_OK)) && TARGETS+=(node-red)
# Throughput and latency also run wispd with the native transform, in the same rounds.
TTARGETS=("${TARGETS[@]}")
((WISPD_OK && NATIVE_OK)) && TTARGETS=(relay wispd wispd-native "${TARGETS[@]:2}")

# ---------------------------------------------------------------- throughput and latency
# Rounds, targets interleaved inside each round and each started fresh, so that a slow
# moment of a shared machine does not land on one target only. Figures: medians over rounds.
declare -A THR=() P50=() P90=() P99=() PMAX=() LOST=() BAD=()
add() { # add ARRAY-NAME TARGET VALUE
    local -n arr=$1
    arr[$2]="${arr[$2]:-} $3"
}
sum() {
    local v t=0
    for v in "$@"; do isnum "$v" && t=$((t + ${v%.*})); done
    echo "$t"
}
say "== throughput (QoS 0, 64 in flight, ${DURATION}s) and latency (QoS 0, 1 in flight," \
    "$LAT_COUNT messages): $RUNS round(s), targets interleaved"
for ((r = 1; r <= RUNS; r++)); do
    for t in "${TTARGETS[@]}"; do
        start_target "$t" "$FN_ONE" || { say "$t did not start or never answered"; continue; }
        lat=$(lg --qos 0 --inflight 1 --count "$LAT_COUNT" --warmup 100) || true
        thr=$(lg --qos 0 --inflight 64 --duration "$DURATION") || true
        stop_pid_tree "$pid"
        record_raw "$t.latency.$r" "$lat"
        record_raw "$t.throughput.$r" "$thr"
        add THR "$t" "$(kv throughput "$thr")"
        add P50 "$t" "$(kv p50_us "$lat")"
        add P90 "$t" "$(kv p90_us "$lat")"
        add P99 "$t" "$(kv p99_us "$lat")"
        add PMAX "$t" "$(kv max_us "$lat")"
        add LOST "$t" "$(kv lost "$lat") $(kv lost "$thr")"
        add BAD "$t" "$(kv bad "$lat") $(kv bad "$thr")"
        say "round $r $t: $(kv throughput "$thr") msg/s; p50 $(kv p50_us "$lat") us," \
            "p99 $(kv p99_us "$lat") us; lost $(kv lost "$thr")+$(kv lost "$lat")," \
            "malformed $(kv bad "$thr")+$(kv bad "$lat")"
    done
done
for t in "${TTARGETS[@]}"; do
    [[ -n ${THR[$t]:-} ]] || continue
    # shellcheck disable=SC2086 # word splitting of the value lists is intended
    {
        R[$t.throughput]=$(median ${THR[$t]})
        R[$t.p50]=$(median ${P50[$t]})
        R[$t.p90]=$(median ${P90[$t]})
        R[$t.p99]=$(median ${P99[$t]})
        R[$t.max]=$(median ${PMAX[$t]})
        R[$t.lost]=$(sum ${LOST[$t]})
        R[$t.bad]=$(sum ${BAD[$t]})
    }
done

# ---------------------------------------------------------------- durable QoS 1
# The same transform with a QoS 1 input: the relay and Node-RED subscribe at QoS 1 (Paho and
# Node-RED acknowledge on receipt, state kept in memory); wispd's trigger is durable: each
# event is in the LMDB inbox before its PUBACK, its output in the outbox before it is sent,
# and the metering record with them, in store.durability batch and sync. fsyncs per event:
# wispd's commit count (SIGUSR1 stats) x 2 (LMDB syncs data pages, then the meta page).
FN_DUR=$TEST_TMP/fn-durable
mkdir -p "$FN_DUR"
cp -r "$ROOT/tests/bench/functions/transform" "$FN_DUR/"
sed -i 's/"qos": 0/"qos": 1/' "$FN_DUR/transform/function.json"
sed 's/"qos": "0"/"qos": "1"/' "$ROOT/tests/bench/node-red/flows.json" >"$TEST_TMP/flows-qos1.json"
DTARGETS=(relay)
[[ -x ${CEILING:-} ]] && DTARGETS+=(ceiling)
((WISPD_OK)) && DTARGETS+=(wispd-batch wispd-sync)
((NR_OK)) && DTARGETS+=(node-red)
declare -A DTHR=() DFS=() DP50=()
say "== durable: QoS 1 throughput (64 in flight, ${DURATION}s): $RUNS round(s), targets interleaved"
for ((r = 1; r <= RUNS; r++)); do
    for t in "${DTARGETS[@]}"; do
        case $t in
        relay) RELAY_QOS=1 start_relay || { say "relay did not start"; continue; }; pid=$RELAY_PID ;;
        ceiling)
            RELAY_QOS=1 start_transform "$CEILING" ceiling ||
                { say "ceiling did not start"; stop_pid_tree "$RELAY_PID"; continue; }
            pid=$RELAY_PID ;;
        wispd-*)
            # A session that outlives the run would make the broker queue the next rounds'
            # messages for it; expire it a second after wispd goes.
            echo '{"mqtt": {"durable_session_expiry_s": 1}}' >"$TEST_TMP/durable.json"
            wispd_cmd "$FN_DUR" --durability "${t#wispd-}" --log-level warn \
                --config "$TEST_TMP/durable.json"
            dlog=$TEST_TMP/wispd-$t-$r.log
            in_own_pgrp "${CMD[@]}" >"$dlog" 2>&1 &
            pid=$!
            BENCH_PIDS+=("$pid")
            wait_ready "$pid" 30 || { tail -5 "$dlog" >&2; say "$t did not answer"; stop_pid_tree "$pid"; continue; } ;;
        node-red) NR_FLOWS=$TEST_TMP/flows-qos1.json start_nr || { say "node-red did not start"; continue; }; pid=$NR_PID ;;
        esac
        thr=$(lg --qos 1 --inflight 64 --duration "$DURATION") || true
        fs=
        if [[ $t == wispd-* ]]; then
            kill -USR1 "$pid" 2>/dev/null || true
            sleep 0.3
            commits=$(grep -o 'store commits=[0-9]*' "$dlog" | tail -1 | cut -d= -f2)
            events=$(grep -o 'fn=transform [^ ]* invocations=[0-9]*' "$dlog" | tail -1 | sed 's/.*=//')
            if isnum "${commits:-x}" && isnum "${events:-x}" && ((events > 0)); then
                fs=$(awk -v c="$commits" -v e="$events" 'BEGIN{printf "%.3f", 2*c/e}')
                add DFS "$t" "$fs"
            fi
        fi
        stop_pid_tree "$pid"
        record_raw "$t.durable.$r" "$thr"
        add DTHR "$t" "$(kv throughput "$thr")"
        add DP50 "$t" "$(kv p50_us "$thr")"
        add LOST "d-$t" "$(kv lost "$thr")"
        say "round $r $t: $(kv throughput "$thr") msg/s QoS 1; lost $(kv lost "$thr"), malformed $(kv bad "$thr")${fs:+; fsyncs/event $fs}"
    done
done
for t in "${DTARGETS[@]}"; do
    # shellcheck disable=SC2086
    {
        R[$t.dthroughput]=$(median ${DTHR[$t]:-})
        R[$t.dfsyncs]=$(median ${DFS[$t]:-})
        R[$t.dlost]=$(sum ${LOST[d-$t]:-})
    }
done

# ---------------------------------------------------------------- startup to ready
say "== startup to first output: $STARTS start(s) each, interleaved"
declare -A UP=()
for ((i = 1; i <= STARTS; i++)); do
    for t in "${TARGETS[@]}"; do
        case $t in
        relay) CMD=("$RELAY" --broker "$BROKER_URI" --qos 0) ;;
        wispd) wispd_cmd "$FN_ONE" ;;
        node-red) nr_cmd ;;
        esac
        line=$(lg --probe --timeout-ms 60000 -- "${CMD[@]}" 2>>"$TEST_TMP/startup-$t.log") || true
        record_raw "$t.startup.$i" "$line"
        add UP "$t" "$(kv ready_ms "$line")"
    done
done
for t in "${TARGETS[@]}"; do
    # shellcheck disable=SC2086
    R[$t.startup]=$(median ${UP[$t]})
    # shellcheck disable=SC2086
    R[$t.startup_min]=$(printf '%s\n' ${UP[$t]} | grep -E '^[0-9.]+$' | sort -g | head -1 || true)
    say "$t startup (ms):${UP[$t]} -> median ${R[$t.startup]}, min ${R[$t.startup_min]:-n/a}"
done

# ---------------------------------------------------------------- cold start (wispd)
# One loadgen connection: COLD_N times stay idle COLD_IDLE_MS (well past the executors' idle
# timeout), time one event (cold: an executor has to be started), then the next (warm).
# COLD_IDLE_MS stays under 1 s on purpose: Paho 1.3.12's receive thread, after a poll that
# timed out (1 s without traffic), sleeps 100 ms without reading, so an idle gap of a whole
# second would land every cold event in that window of wispd's client (the relay shows the
# same); that tail is real for sparse traffic but is not the executor's cold start.
COLD_IDLE_MS=$((COLD_IDLE_TIMEOUT_MS * 3))
if ((WISPD_OK)); then
    say "== wispd: cold start (idle_timeout_ms=$COLD_IDLE_TIMEOUT_MS, idle ${COLD_IDLE_MS} ms), $COLD_N times"
    if start_wispd "$FN_ONE" --config "$TEST_TMP/cold.json"; then
        R[wispd.busy_procs]=$(descendants "$WISPD_PID" | wc -l)
        sleep "$(awk -v ms="$COLD_IDLE_MS" 'BEGIN{printf "%.3f", ms/1000}')"
        R[wispd.idle_procs]=$(descendants "$WISPD_PID" | wc -l)
        line=$(lg --qos 0 --cold "$COLD_N" --idle-ms "$COLD_IDLE_MS") || true
        record_raw wispd.cold "$line"
        R[wispd.cold]=$(kv cold_p50_us "$line")
        R[wispd.warm]=$(kv warm_p50_us "$line")
        say "wispd cold start: p50 ${R[wispd.cold]} us (min $(kv cold_min_us "$line"), max $(kv cold_max_us "$line"));" \
            "warm event right after: p50 ${R[wispd.warm]} us; lost $(kv lost "$line")"
        say "wispd processes (itself + descendants): ${R[wispd.busy_procs]} after an event," \
            "${R[wispd.idle_procs]} after ${COLD_IDLE_MS} ms idle"
        if ((${R[wispd.idle_procs]} >= ${R[wispd.busy_procs]})); then
            say "NOTE: the process count did not drop while idle: executors may not scale to zero"
        fi
        stop_pid_tree "$WISPD_PID"
    else
        say "wispd with --config $TEST_TMP/cold.json did not start or never answered"
    fi
fi

# ---------------------------------------------------------------- idle PSS
declare -A PSS_BREAKDOWN=()
for t in "${TARGETS[@]}"; do
    say "== $t: idle PSS"
    start_target "$t" "$FN_ALL" || { say "$t did not start or never answered"; continue; }
    if [[ $t == wispd ]]; then
        # Every idle-NN function serves one event; each acknowledges on bench/idle/done.
        mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -t bench/idle/done >"$TEST_TMP/idle-done.txt" 2>/dev/null &
        sub=$!
        BENCH_PIDS+=("$sub")
        acked=0
        for ((i = 0; i < 100 && acked < 9; i++)); do
            for n in 01 02 03 04 05 06 07 08 09; do
                grep -q "\"idle-$n\"" "$TEST_TMP/idle-done.txt" ||
                    mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -t "bench/idle/$n" -m "{\"seq\":$i}"
            done
            sleep 0.1
            acked=$(grep -o '"idle-0[1-9]"' "$TEST_TMP/idle-done.txt" | sort -u | wc -l || true)
        done
        stop_pid_tree "$sub"
        R[wispd.idle_acked]=$acked
        ((acked == 9)) || say "only $acked of 9 idle functions answered; measuring anyway"
    fi
    sleep 1 # let the last event settle; well inside wispd's default 60 s idle timeout
    pss_tree "$pid"
    R[$t.pss]=$PSS_TOTAL
    R[$t.uss]=$USS_TOTAL
    R[$t.rss]=$RSS_TOTAL
    PSS_BREAKDOWN[$t]=$PSS_DETAIL
    R[$t.procs]=$(descendants "$pid" | wc -l)
    say "$t idle: PSS ${R[$t.pss]} kB, USS ${R[$t.uss]} kB, RSS ${R[$t.rss]} kB over ${R[$t.procs]} process(es)"
    stop_pid_tree "$pid"
done

# ---------------------------------------------------------------- report
v() { echo "${R[$1]:-n/a}"; }
if ((WISPD_OK)); then
    R[wispd.added_p50]=$(diff_of "$(v wispd.p50)" "$(v relay.p50)")
    R[wispd-native.vs_lua]=$(ratio "$(v wispd-native.throughput)" "$(v wispd.throughput)")
fi
((NR_OK)) && R[node-red.added_p50]=$(diff_of "$(v node-red.p50)" "$(v relay.p50)")

# cells LABEL RELAY WISPD WISPD/RELAY [NODE-RED NR/RELAY]: one table row.
cells() {
    printf '%-44s %11s %11s %9s' "$1" "$2" "$3" "$4"
    ((NR_OK)) && printf ' %11s %9s' "${5:--}" "${6:--}"
    printf '\n'
}

# row LABEL KEY: a figure measured for every target, with ratios to the relay.
row() {
    local a b c
    a=$(v "relay.$2")
    b=$(v "wispd.$2")
    c=$(v "node-red.$2")
    cells "$1" "$a" "$b" "$(ratio "$b" "$a")" "$c" "$(ratio "$c" "$a")"
}

report() {
    local t
    echo
    echo "Wisp benchmark — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPU(s) $(uname -m)," \
        "$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null)"
    echo "one mosquitto $(mosquitto -h 2>/dev/null | awk 'NR==1 {print $3}') on $BROKER_URI; loadgen, broker and the" \
        "program under test share the CPUs"
    ((WISPD_OK)) || echo "wispd: SKIPPED ($WISPD_WHY)"
    if ((WITH_NR)); then
        if ((NR_OK)); then
            echo "node-red: $NR_VERSION (node $(node --version))"
        else
            echo "node-red: SKIPPED (npm install failed or npm missing)"
        fi
    fi
    echo
    cells figure relay wispd wispd/rly node-red nr/rly
    row "throughput QoS0 64 in flight (msg/s, med $RUNS)" throughput
    cells "  wispd native C handler (msg/s; native/lua)" - "$(v wispd-native.throughput)" \
        "$(v wispd-native.vs_lua)"
    row "latency QoS0 1 in flight p50 (us)" p50
    row "latency QoS0 1 in flight p99 (us)" p99
    cells "lost / malformed outputs, all rounds" "$(v relay.lost)/$(v relay.bad)" \
        "$(v wispd.lost)/$(v wispd.bad)" - "$(v node-red.lost)/$(v node-red.bad)" -
    cells "added p50 latency vs relay (us)" 0 "$(v wispd.added_p50)" - "$(v node-red.added_p50)" -
    cells "durable QoS1 64 in flight (msg/s, med $RUNS)" "$(v relay.dthroughput)" \
        "$(v wispd-batch.dthroughput)" "$(ratio "$(v wispd-batch.dthroughput)" "$(v relay.dthroughput)")" \
        "$(v node-red.dthroughput)" "$(ratio "$(v node-red.dthroughput)" "$(v relay.dthroughput)")"
    cells "  wispd store.durability sync (msg/s)" - "$(v wispd-sync.dthroughput)" \
        "$(ratio "$(v wispd-sync.dthroughput)" "$(v relay.dthroughput)")"
    cells "  fsyncs per event, batch / sync" - "$(v wispd-batch.dfsyncs)/$(v wispd-sync.dfsyncs)" -
    cells "  lost outputs, all rounds (batch/sync)" "$(v relay.dlost)" \
        "$(v wispd-batch.dlost)/$(v wispd-sync.dlost)" - "$(v node-red.dlost)" -
    ((NR_OK)) && cells "  wispd batch / node-red QoS1" - "$(ratio "$(v wispd-batch.dthroughput)" "$(v node-red.dthroughput)")" -
    cells "  ceiling client QoS1 (msg/s, med $RUNS; relay col.)" "$(v ceiling.dthroughput)" - - - -
    cells "  share of the ceiling: wispd batch, node-red" - \
        "$(ratio "$(v wispd-batch.dthroughput)" "$(v ceiling.dthroughput)")" - \
        "$(ratio "$(v node-red.dthroughput)" "$(v ceiling.dthroughput)")" -
    row "startup to first output (ms, med $STARTS)" startup
    row "startup to first output (ms, min of $STARTS)" startup_min
    cells "cold start: 1st event after idle (us, med)" - "$(v wispd.cold)" -
    cells "cold start: warm event right after (us, med)" - "$(v wispd.warm)" -
    row "idle PSS, process + descendants (kB)" pss
    row "idle USS (private), process + desc. (kB)" uss
    echo
    echo "wispd PSS is with the 10 bench functions loaded, each having served one event;" \
        "relay and node-red run the transform only."
    echo "Startup: Paho 1.3.12's receive thread may sleep 100 ms before it reads the CONNACK," \
        "so any Paho client's start is ~15 ms or ~115 ms: compare min and median."
    for t in "${TARGETS[@]}"; do
        [[ -n ${PSS_BREAKDOWN[$t]:-} ]] || continue
        echo "  $t memory by process:"
        printf '%s' "${PSS_BREAKDOWN[$t]}"
    done
    if ((WISPD_OK)) && [[ -n ${R[wispd.idle_procs]:-} ]]; then
        echo "  wispd cold start: idle_timeout_ms=$COLD_IDLE_TIMEOUT_MS, events after ${COLD_IDLE_MS} ms idle;" \
            "wispd + descendants: ${R[wispd.busy_procs]} after an event, ${R[wispd.idle_procs]} when idle"
    fi
}

REPORT=$(report)
echo "$REPORT"

mkdir -p "$(dirname "$OUT")"
{
    echo "# wisp bench results (key=value); human table at the end"
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "git=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "cpus=$(nproc) arch=$(uname -m) duration_s=$DURATION runs=$RUNS latency_count=$LAT_COUNT starts=$STARTS"
    echo "wispd_ok=$WISPD_OK node_red_ok=$NR_OK node_red_version=${NR_VERSION:-}"
    for k in $(printf '%s\n' "${!R[@]}" | sort); do echo "$k=${R[$k]}"; done
    for l in "${RAW[@]}"; do echo "raw.$l"; done
    while IFS= read -r l; do echo "# $l"; done <<<"$REPORT"
} >"$OUT"
say "results written to $OUT"
