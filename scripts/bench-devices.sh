#!/usr/bin/env bash
# Wisp device benchmark: timers and sensor polling in wispd, against baselines measured in the
# same run on the same machine. Prints figures, never pass/fail.
#
#   scripts/bench-devices.sh [--count N] [--cpu-seconds S]
#
# Figures:
#   timer jitter   a function with {"type": "timer", "every": "10ms"}, N firings (default 1000):
#                  how late wispd's loop dispatched each firing (late_us in the event) and how
#                  late the handler started (ctx.now() - the scheduled time), p50 / p99 / max;
#                  baseline, running at the same time: a bare C loop sleeping to absolute
#                  deadlines every 10 ms (wisp-timer-baseline). Also firings counted against the schedule (drift).
#   sensor polling 100 IIO sensors in a fake sysfs tree, each polled once a second by a sensor
#                  trigger (change 0.5: the first reading fires, then nothing changes): CPU of
#                  wispd and its executors over S seconds (default 30) from /proc, as % of one
#                  core, minus the same wispd with the same functions but no sensors.
#
# Environment: BUILD_DIR (default build-bench), WISPD (default $BUILD_DIR/runtime/wispd).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build-bench}
COUNT=1000
CPU_S=30
while [[ $# -gt 0 ]]; do
    case $1 in
    --count) COUNT=$2; shift 2 ;;
    --cpu-seconds) CPU_S=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-devices: unknown argument: $1" >&2; exit 2 ;;
    esac
done
[[ $COUNT =~ ^[1-9][0-9]*$ && $CPU_S =~ ^[1-9][0-9]*$ ]] ||
    { echo "bench-devices: --count and --cpu-seconds take positive whole numbers" >&2; exit 2; }

say() { echo "bench-devices: $*" >&2; }
# shellcheck source=../tests/lib/broker.sh
source "$ROOT/tests/lib/broker.sh"
test_tmp_init

if [[ -z ${WISPD:-} ]]; then
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$BUILD" --target wispd wisp-timer-baseline -j2 >/dev/null
    WISPD=$BUILD/runtime/wispd
fi
BASELINE=${WISP_TIMER_BASELINE:-$BUILD/tests/wisp-timer-baseline}
broker_start

# p50 p99 max of the numbers in a file (one per line).
pct() {
    sort -n "$1" | awk '{a[NR]=$1} END {
        if (NR == 0) { print "n/a n/a n/a"; exit }
        i50 = int(NR * 0.50); if (i50 < 1) i50 = 1
        i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
        printf "%d %d %d\n", a[i50], a[i99], a[NR] }'
}

# CPU ticks (utime + stime) of a process and all its descendants.
tree_ticks() {
    local pids=("$1") total=0 p kids
    while ((${#pids[@]})); do
        p=${pids[0]}; pids=("${pids[@]:1}")
        [[ -r /proc/$p/stat ]] || continue
        total=$((total + $(awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$p/stat")))
        kids=$(cat /proc/"$p"/task/*/children 2>/dev/null || true)
        for k in $kids; do pids+=("$k"); done
    done
    echo "$total"
}

start_wispd() { # start_wispd NAME FUNCTIONS [flags...]
    local name=$1 fdir=$2; shift 2
    mkdir -p "$TEST_TMP/data-$name"
    "$WISPD" --functions "$fdir" --broker "$BROKER_URI" --data "$TEST_TMP/data-$name" \
        --device bench ${WISPD_ARGS:-} "$@" >"$TEST_TMP/$name.log" 2>&1 &
    WPID=$!
    track_pid "$WPID"
    wait_for 20 "wispd $name ready" grep -q 'msg="ready' "$TEST_TMP/$name.log" ||
        { cat "$TEST_TMP/$name.log" >&2; exit 1; }
}
stop_wispd() { kill -TERM "$WPID" 2>/dev/null || true; wait "$WPID" 2>/dev/null || true; }

# ---------------------------------------------------------------- timer jitter
say "timer jitter: $COUNT firings every 10 ms (about $((COUNT / 100)) s each)"

fdir=$TEST_TMP/fn-timer
mkdir -p "$fdir/jitter"
echo '{"name": "jitter", "triggers": [{"type": "timer", "every": "10ms"}], "limits": {"timeout_ms": 1000}}' \
    >"$fdir/jitter/function.json"
cat >"$fdir/jitter/handler.lua" <<'EOF'
return function(e, ctx)
  local started = math.floor(ctx.now() * 1e6 - e.data.scheduled_us)
  ctx.publish("bench/jitter", e.data.late_us .. " " .. started .. " " .. e.data.scheduled_us, {qos = 0})
end
EOF
mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -t bench/jitter -C $((COUNT + 50)) >"$TEST_TMP/jitter.raw" &
SUB=$!
track_pid "$SUB"
sleep 0.3
start_wispd timer "$fdir"
# The baseline runs at the same time, so that a stall of the machine (a VM
# being descheduled, a slow disk) shows in both rather than in one.
sleep 0.5 # past wispd's warm-up
"$BASELINE" 10 "$COUNT" >"$TEST_TMP/base.txt" &
BPID=$!
wait_for $((COUNT / 100 + 30)) "jitter samples" bash -c "[ \$(wc -l <'$TEST_TMP/jitter.raw') -ge $((COUNT + 50)) ]" || true
wait "$BPID" || true
stop_wispd
kill "$SUB" 2>/dev/null || true
read -r b50 b99 bmax < <(pct "$TEST_TMP/base.txt")
over() { awk '$1 > 2000' "$1" | grep -c '' || true; }
# The first 50 firings warm up (executor start); the rest are measured.
tail -n +51 "$TEST_TMP/jitter.raw" | head -n "$COUNT" >"$TEST_TMP/jitter.txt"
awk '{print $1}' "$TEST_TMP/jitter.txt" >"$TEST_TMP/dispatch.txt"
awk '{print $2}' "$TEST_TMP/jitter.txt" >"$TEST_TMP/handler.txt"
read -r d50 d99 dmax < <(pct "$TEST_TMP/dispatch.txt")
read -r h50 h99 hmax < <(pct "$TEST_TMP/handler.txt")
n=$(wc -l <"$TEST_TMP/jitter.txt")
first=$(head -1 "$TEST_TMP/jitter.txt" | awk '{print $3}')
last=$(tail -1 "$TEST_TMP/jitter.txt" | awk '{print $3}')
span_ms=$(( (last - first) / 1000 ))
expected=$(( span_ms / 10 + 1 ))

# ---------------------------------------------------------------- sensor polling CPU
say "sensor polling: 100 sensors at 1 Hz, ${CPU_S} s per wispd (two runs)"
sys=$TEST_TMP/sys
cfg=$TEST_TMP/sensors.json
{
    printf '{"ports": {"sysfs_root": "%s"}, "sensors": {' "$sys"
    for i in $(seq 0 99); do
        d=$sys/bus/iio/devices/iio:device$i
        mkdir -p "$d"
        echo $((20000 + i)) >"$d/in_temp_raw"
        printf '%s"s%d": {"port": "iio", "device": "iio:device%d", "channel": "in_temp"}' \
            "$([ "$i" -gt 0 ] && echo ,)" "$i" "$i"
    done
    printf '}}\n'
} >"$cfg"
with=$TEST_TMP/fn-sensors
without=$TEST_TMP/fn-nosensors
for f in 0 1 2 3; do
    mkdir -p "$with/poll$f" "$without/poll$f"
    trig=$(for i in $(seq $((f * 25)) $((f * 25 + 24))); do
        printf '%s{"type": "sensor", "sensor": "s%d", "every": "1s", "change": 0.5}' "$([ "$i" -gt $((f * 25)) ] && echo ,)" "$i"
    done)
    echo "{\"name\": \"poll$f\", \"triggers\": [$trig]}" >"$with/poll$f/function.json"
    echo "{\"name\": \"poll$f\", \"triggers\": [{\"type\": \"mqtt\", \"topic\": \"bench/none$f\", \"qos\": 0}]}" \
        >"$without/poll$f/function.json"
    echo 'return function(e, ctx) end' >"$with/poll$f/handler.lua"
    echo 'return function(e, ctx) end' >"$without/poll$f/handler.lua"
done
hz=$(getconf CLK_TCK)
measure_cpu() { # measure_cpu NAME FUNCTIONS [flags]: % of one core into $TEST_TMP/NAME.cpu
    start_wispd "$@"
    sleep 3 # first readings fire, executors start and idle
    local t0 t1
    t0=$(tree_ticks "$WPID")
    sleep "$CPU_S"
    t1=$(tree_ticks "$WPID")
    stop_wispd
    awk -v d=$((t1 - t0)) -v hz="$hz" -v s="$CPU_S" 'BEGIN {printf "%.2f", d / hz / s * 100}' \
        >"$TEST_TMP/$1.cpu"
}
measure_cpu sensors "$with" --config "$cfg"
measure_cpu nosensors "$without"
cpu_with=$(cat "$TEST_TMP/sensors.cpu")
cpu_without=$(cat "$TEST_TMP/nosensors.cpu")
cpu_net=$(awk -v a="$cpu_with" -v b="$cpu_without" 'BEGIN {printf "%.2f", a - b}')
polls=$(grep -o 'sensor_polls=[0-9]*' "$TEST_TMP/sensors.log" | cut -d= -f2)
read_errors=$(grep -o 'sensor_errors=[0-9]*' "$TEST_TMP/sensors.log" | cut -d= -f2)
elapsed=$(( CPU_S + 3 ))

# ---------------------------------------------------------------- report
cat <<EOF

Wisp device benchmark ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores)

Timer jitter, every 10 ms, $n firings measured (lateness in microseconds; floor: handler p99 <= 2000)
                                   p50      p99      max
  baseline (C, clock_nanosleep) $(printf '%8s %8s %8s' "$b50" "$b99" "$bmax")
  wispd loop dispatch           $(printf '%8s %8s %8s' "$d50" "$d99" "$dmax")
  handler start (Lua)           $(printf '%8s %8s %8s' "$h50" "$h99" "$hmax")
  firings later than 2 ms: baseline $(over "$TEST_TMP/base.txt"), wispd dispatch $(over "$TEST_TMP/dispatch.txt"), handler $(over "$TEST_TMP/handler.txt")
  firings: $n over ${span_ms} ms of schedule, $expected expected (drift-free schedule: equal;
  fewer means wispd skipped periods it was too late for)

Sensor polling, 100 IIO sensors at 1 Hz, ${CPU_S} s (floor: <= 2 % of one core)
  wispd with the sensor triggers      ${cpu_with} % of one core
  wispd with the same functions, none ${cpu_without} % of one core
  cost of polling                     ${cpu_net} % of one core
  polls done: ${polls:-?} in about ${elapsed} s (100 per second expected), read errors: ${read_errors:-?}
EOF
