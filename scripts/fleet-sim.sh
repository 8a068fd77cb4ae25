#!/usr/bin/env bash
# Wisp fleet simulation: N real wispd processes (own device ids and data dirs) with cloud sync,
# one private mosquitto on loopback and one wisp-cloud. Prints figures, never pass/fail on speed
# (it exits 1 only when something is lost or wrong: a device that never converges, a metering
# total that differs from the invocations the devices logged).
#
#   scripts/fleet-sim.sh [N] [--events K]        N devices (default 200), K events per device
#                                                for the metering round (default 20)
#
# Figures:
#   deploy     `wisp deploy --to fleet=sim` (no canary) until every device reports the new
#              version active: time, from the command's start
#   halt       a failing version to a 10 % canary (bake 60 s, device health check over 3
#              invocations): from the event that makes the canaries cross the threshold to
#              the rollout halted, and to every canary running the old version again
#   metering   wisp-cloud stopped while every device handles K events; then started: time until
#              the totals equal the devices' REPORT lines (devices resend an unacknowledged batch
#              after 5 s), and wisp-cloud's CPU time for it; totals checked again after a
#              second restart (no double counting)
#   footprint  wisp-cloud RSS and CPU time over the run; wispd RSS (median)
#
# Environment: BUILD_DIR (default build-fleet), or WISPD, WISP and WISP_CLOUD_BIN.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build-fleet}
N=200
EVENTS=20
while [[ $# -gt 0 ]]; do
    case $1 in
    --events) EVENTS=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    [0-9]*) N=$1; shift ;;
    *) echo "fleet-sim: unknown argument: $1" >&2; exit 2 ;;
    esac
done
[[ $N =~ ^[1-9][0-9]*$ && $N -le 2000 && $EVENTS =~ ^[1-9][0-9]*$ && $EVENTS -le 1000 ]] ||
    { echo "fleet-sim: N takes 1..2000 devices, --events 1..1000" >&2; exit 2; }

say() { echo "fleet-sim: $*" >&2; }
# shellcheck source=../tests/lib/broker.sh
source "$ROOT/tests/lib/broker.sh"
test_tmp_init

if [[ -z ${WISPD:-} || -z ${WISP:-} || -z ${WISP_CLOUD_BIN:-} ]]; then
    say "building into $BUILD"
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWISP_TESTS=OFF >/dev/null
    cmake --build "$BUILD" --target wispd wisp wisp-cloud -j2 >/dev/null
    WISPD=$BUILD/runtime/wispd WISP=$BUILD/runtime/wisp WISP_CLOUD_BIN=$BUILD/cloud-sync/server/wisp-cloud
fi
export WISP WISP_CLOUD_BIN

# Every device holds a broker connection; wispd, its zygote and mosquitto need descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
need=$((N * 2 + 256))
(($(ulimit -n) >= need)) || { say "needs $need open files (ulimit -n is $(ulimit -n))"; exit 1; }
broker_start "max_connections -1" "max_queued_messages 100000" "max_inflight_messages 0"
# shellcheck source=../tests/lib/cloud.sh
source "$ROOT/tests/lib/cloud.sh"
cloud_start
key=$(publisher_key)

now() { date +%s.%N; }
# poll TIMEOUT_S WHAT CMD...: like wait_for, but every 0.25 s (the API's answers for hundreds
# of devices are large; polling them flat out would take the CPU the devices need).
poll() {
    local limit=$1 what=$2 t0; shift 2
    t0=$(now)
    until "$@"; do
        if awk -v a="$t0" -v b="$(now)" -v l="$limit" 'BEGIN { exit !(b - a > l) }'; then
            say "gave up after ${limit} s waiting for: $what"
            return 1
        fi
        sleep 0.25
    done
}
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
q() { curl -sf -H "Authorization: Bearer $CLOUD_TOKEN" "$CLOUD_URL$1"; }
ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)
cloud_ticks0=$(ticks "$CLOUD_PID")
cloud_t0=$(now)

# sim VERSION [LUA]: a function answering events on sim/in.
sim_fn() {
    local v=$1 body=${2:-} dir=$TEST_TMP/src/sim-$1
    mkdir -p "$dir"
    printf '{"name": "sim", "version": "%s", "triggers": [{"type": "mqtt", "topic": "sim/in"}], "retry": {"max": 0}}\n' "$v" >"$dir/function.json"
    printf 'return function(e, ctx)\n  %s\n  return nil\nend\n' "$body" >"$dir/handler.lua"
    echo "$dir"
}

say "starting $N devices"
declare -a DEV_PIDS=()
t=$(now)
for ((i = 0; i < N; i++)); do
    name=$(printf 'sim-%04d' "$i")
    mkdir -p "$TEST_TMP/data-$name" "$TEST_TMP/local"
    "$WISPD" --functions "$TEST_TMP/local" --broker "$BROKER_URI" --data "$TEST_TMP/data-$name" \
        --device "$name" --max-executors 2 --cloud --cloud-trust "$TEST_TMP/trust" \
        --cloud-labels "fleet=sim,idx=$i" >"$TEST_TMP/wispd-$name.log" 2>&1 &
    DEV_PIDS+=($!)
    track_pid "$!"
done
poll 600 "$N devices registered" api_ok /v1/health ".devices >= $N" ||
    { say "only $(q /v1/devices | jq '[.devices[] | select(.online)] | length') of $N devices online"; exit 1; }
start_s=$(since "$t")
say "$N devices online after $start_s s"

# rollout_wait ID JQ_CONDITION TIMEOUT
rollout_wait() { poll "$3" "rollout $1: $2" api_ok "/v1/rollouts/$1" "$2"; }

# 1. Deploy to all.
t=$(now)
"$WISP" deploy "$(sim_fn 1.0.0)" --to fleet=sim --key "$key" --wait 60 >"$TEST_TMP/deploy1.txt" ||
    { cat "$TEST_TMP/deploy1.txt" >&2; say "deploy 1 did not finish"; exit 1; }
deploy_s=$(since "$t")
r1=$(q /v1/rollouts | jq -r '.rollouts[0].id')
say "deploy: 100 % of $N devices active after $deploy_s s"

# 2. A failing version to a 10 % canary; the devices' health check trips after 2 failures of 3.
"$WISP" deploy "$(sim_fn 2.0.0 'error("bad build")')" --to fleet=sim --key "$key" --canary 10% \
    --bake 60s --health-min 3 >/dev/null
r2=$(q /v1/rollouts | jq -r '.rollouts[0].id')
ncanary=$(q "/v1/rollouts/$r2" | jq '[.devices[] | select(.phase == "canary")] | length')
rollout_wait "$r2" '[.devices[] | select(.state == "active")] | length == '"$ncanary" 60 ||
    { say "canaries did not activate: $(q "/v1/rollouts/$r2" | jq -c '.counts // .state')"; exit 1; }
mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -q 1 -t sim/in -m one
sleep 0.5
t_cross=$(now) # the second failure crosses 50 % of 3 invocations
mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -q 1 -t sim/in -m two
rollout_wait "$r2" '.state == "rolled_back" or .state == "halted"' 30 ||
    { say "rollout did not halt: $(q "/v1/rollouts/$r2" | jq -c .)"; exit 1; }
halt_s=$(since "$t_cross")
canaries=$(q "/v1/rollouts/$r2" | jq -r '.devices[] | select(.phase == "canary") | .device')
canary_list=$(printf '%s\n' $canaries | jq -R . | jq -sc .)
canaries_back() {
    api_ok "/v1/devices?label=fleet=sim" "[.devices[] | select(.device as \$d | $canary_list | index(\$d)) |
        select(.functions.sim.version == \"1.0.0\" and .functions.sim.status == \"active\")] | length == $ncanary"
}
poll 120 "canaries back on 1.0.0" canaries_back ||
    { say "canaries not back on 1.0.0"; exit 1; }
rollback_s=$(since "$t_cross")
say "halt: rollout $r2 halted $halt_s s and every canary back on 1.0.0 $rollback_s s after the crossing event"

# 3. Metering: wisp-cloud away while every device handles EVENTS events.
invocations() { cat "$TEST_TMP"/wispd-sim-*.log | grep -c 'mod=report' || true; }
cloud_ticks_a=$(ticks "$CLOUD_PID")
cloud_rss_a=$(rss_kb "$CLOUD_PID")
cloud_stop
before=$(invocations)
for ((k = 0; k < EVENTS; k++)); do
    mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -q 1 -t sim/in -m "m$k"
done
want=$((before + N * EVENTS))
poll 300 "$want invocations logged" bash -c "[ \$(cat $TEST_TMP/wispd-sim-*.log | grep -c 'mod=report') -ge $want ]" ||
    { say "devices logged $(invocations) invocations, expected $want"; exit 1; }
want=$(invocations)
t=$(now)
cloud_start
total() { q '/v1/meter?by=device&period=day' | jq '[.rows[].invocations] | add // 0'; }
poll 300 "metering totals = $want" api_ok '/v1/meter?by=device&period=day' "([.rows[].invocations] | add // 0) == $want" ||
    { say "metering total $(total), the devices logged $want invocations"; exit 1; }
ingest_s=$(since "$t")
ingest_ticks=$(ticks "$CLOUD_PID")
backlog=$((N * EVENTS))
rate=$(awk -v n="$backlog" -v s="$ingest_s" 'BEGIN { printf "%.0f", n / s }')
ingest_cpu=$(awk -v t="$ingest_ticks" -v hz="$hz" 'BEGIN { printf "%.2f", t / hz }')
cpu_rate=$(awk -v n="$backlog" -v t="$ingest_ticks" -v hz="$hz" 'BEGIN { if (t > 0) printf "%.0f", n * hz / t; else print "> " n * hz }')
ticks_2=$(ticks "$CLOUD_PID")
cloud_stop
cloud_start
sleep 3
got=$(total)
[[ $got -eq $want ]] || { say "after a restart the total is $got, expected $want"; exit 1; }
ticks_b=$(ticks "$CLOUD_PID")
cloud_cpu=$(awk -v a="$cloud_ticks_a" -v b="$cloud_ticks0" -v m="$ticks_2" -v c="$ticks_b" -v hz="$hz" 'BEGIN { printf "%.2f", (a - b + m + c) / hz }')
cloud_rss=$(rss_kb "$CLOUD_PID")
run_s=$(since "$cloud_t0")
wispd_rss=$(for p in "${DEV_PIDS[@]}"; do rss_kb "$p"; done | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
say "metering: $backlog records ingested in $ingest_s s; totals $got = $want invocations"

cat <<EOF

Wisp fleet simulation: $N devices, one mosquitto, one wisp-cloud ($(nproc) cores, $(date -u +%F))
| figure | value | floor |
|---|---|---|
| devices online (start of $N wispd) | $start_s s | |
| deploy to 100 % active (no canary) | $deploy_s s | <= 10 s |
| failing canary ($ncanary of $N): crossing -> rollout halted | $halt_s s | |
| failing canary: crossing -> every canary back on the old version | $rollback_s s | <= 5 s |
| metering backlog ($backlog records after wisp-cloud was down): drained in | $ingest_s s = $rate records/s | |
| wisp-cloud CPU for start + that backlog | $ingest_cpu s = $cpu_rate records per CPU-second | |
| metering total vs invocations logged by the devices | $got = $want | equal |
| wisp-cloud RSS | ${cloud_rss_a} KiB before restart, ${cloud_rss} KiB after | |
| wisp-cloud CPU over the run (${run_s} s, three processes) | $cloud_cpu s | |
| wispd RSS, median of $N | ${wispd_rss} KiB | |
EOF
