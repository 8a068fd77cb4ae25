#!/usr/bin/env bash
# Wisp in one command: installs what is missing, builds, starts a private
# mosquitto on a free loopback port and wispd with the functions in
# examples/, feeds simulated sensor readings over MQTT, shows what the
# functions publish, and ends with a one-screen summary. Then the fleet:
# wisp-cloud and two more gateways, a signed canary deploy with `wisp deploy`,
# and the metering the control plane collected.
#
#   scripts/quickstart.sh                 run for 20 seconds
#   scripts/quickstart.sh --duration 60   or longer (Ctrl-C stops early)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
duration=20
while [ $# -gt 0 ]; do
  case $1 in
    --duration) duration=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "quickstart: unknown option $1" >&2; exit 2 ;;
  esac
done

scripts/install-deps.sh
echo "== building"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target wispd wisp wisp-cloud example-native-threshold >/dev/null
wispd=$root/build/runtime/wispd
wisp=$root/build/runtime/wisp
# build/examples holds every example as a complete function folder (the
# native one with its handler.so); examples/gateway.json configures the
# simulated sensors and GPIO chip they use.
examples=$root/build/examples
gateway=$root/examples/gateway.json

source tests/lib/broker.sh
test_tmp_init
# Runs at exit: stops what is still running and removes the temp dir,
# keeping the script's own exit status (test_cleanup reads it from $?).
stop_all() {
  local rc=$?
  set +e
  if [ -n "${sim_pid:-}" ]; then kill "$sim_pid" 2>/dev/null; fi
  for p in ${wispd_pid:-} ${fleet_pids:-}; do
    kill -TERM "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  (exit "$rc")
  test_cleanup
}
trap stop_all EXIT
# Ctrl-C ends the simulation early; the summary and a clean stop still follow.
# (A terminal's Ctrl-C reaches wispd too, which drains and exits 0 on SIGINT.)
trap 'echo; echo "== Ctrl-C: stopping early"' INT

echo "== checking the example functions"
"$wisp" validate "$examples"

broker_start
echo "== mosquitto listening on $BROKER_URI"

log=$TEST_TMP/wispd.log
"$wispd" --functions "$examples" --config "$gateway" --broker "$BROKER_URI" \
  --data "$TEST_TMP/data" --device quickstart >"$log" 2>&1 &
wispd_pid=$!
wait_for 10 "wispd ready" grep -q 'msg="ready' "$log" || { cat "$log"; exit 1; }
grep -o 'msg="ready[^"]*"' "$log" | sed 's/^/== wispd /'

# Everything the functions publish, as it happens.
: >"$TEST_TMP/outputs"
mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -v -t 'alerts/#' -t 'readings/#' -t 'csv/#' \
  -t 'status/#' -t 'door/#' -t 'wisp/dlq/#' >"$TEST_TMP/outputs" &
track_pid $!
tail -n +1 -f "$TEST_TMP/outputs" | sed -u 's/^/  out  /' &
track_pid $!

# Simulated sensors: three rooms drifting around their own base temperature,
# the kitchen crossing the alert threshold now and then, a humidity sensor,
# and, every few seconds, a broken reading that the alert function rejects
# (it is retried, then dead-lettered to wisp/dlq/temp-alert).
simulate() {
  local i=0 rooms=(kitchen hall attic) base=(28 21 17)
  while :; do
    for r in 0 1 2; do
      # A triangle wave of +-5 C with a period of 40 readings, per room.
      local phase=$(( (i + 10 + r * 13) % 40 )) delta
      delta=$(( phase < 20 ? phase - 10 : 30 - phase ))
      local t=$(( base[r] * 10 + delta * 5 ))
      mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -q 1 -t "sensors/${rooms[r]}/temp" \
        -m "{\"dev\":\"${rooms[r]}\",\"temp\":$((t / 10)).$((t % 10))}"
    done
    mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -t sensors/hall/humidity -m "{\"humidity\":$((40 + i % 7))}"
    if (( i % 15 == 7 )); then
      mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -q 1 -t sensors/garage/temp -m 'sensor fault'
    fi
    i=$((i + 1))
    sleep 0.5
  done
}
simulate &
sim_pid=$!
echo "== for ${duration}s: MQTT sensors on sensors/<room>/temp and sensors/hall/humidity; a"
echo "   simulated boiler sensor, CPU sensor and doorbell GPIO line (examples/gateway.json);"
echo "   a 5 s heartbeat timer. Outputs:"
sleep "$duration" &
wait $! || true
kill "$sim_pid" 2>/dev/null || true
sim_pid=
sleep 1

echo
echo "== stopping wispd (SIGTERM: finish accepted work, then exit)"
pss_kb=0
for p in $wispd_pid $(pgrep -P "$wispd_pid") $(pgrep -P "$(pgrep -P "$wispd_pid" | head -1)" 2>/dev/null); do
  v=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
  pss_kb=$((pss_kb + ${v:-0}))
done
kill -TERM "$wispd_pid" 2>/dev/null || true
rc=0
wait "$wispd_pid" || rc=$?
wispd_pid=

echo
echo "================================ summary ================================"
printf '%-14s %8s %6s %7s %8s %9s %7s\n' function invoked ok errors timeouts cold p50_ms
for fn in $(grep -o 'mod=report fn=[^ ]*' "$log" | cut -d= -f3 | sort -u); do
  lines=$(grep "mod=report fn=$fn " "$log")
  n=$(grep -c '' <<<"$lines")
  ok=$(grep -c 'outcome=ok' <<<"$lines" || true)
  to=$(grep -c 'outcome=timeout' <<<"$lines" || true)
  cold=$(grep -c 'cold=1' <<<"$lines" || true)
  p50=$(grep -o 'duration_ms=[0-9.]*' <<<"$lines" | cut -d= -f2 | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  printf '%-14s %8d %6d %7d %8d %9d %7s\n' "$fn" "$n" "$ok" "$((n - ok - to))" "$to" "$cold" "$p50"
done
echo
count() { grep -c "^$1" "$TEST_TMP/outputs" || true; }
printf 'messages published by the functions: %s (alerts %s, readings %s, csv %s, status %s, door %s, dead letters %s)\n' \
  "$(grep -c '' "$TEST_TMP/outputs")" "$(count alerts/)" "$(count readings/)" "$(count csv/)" \
  "$(count status/)" "$(count door/)" "$(count wisp/dlq/)"
if [ "$pss_kb" -gt 0 ]; then
  printf 'wispd memory (PSS, supervisor + zygote + warm executors): %d KiB\n' "$pss_kb"
else
  echo 'wispd memory: not measured (wispd had already stopped on Ctrl-C)'
fi
printf 'wispd exit status after SIGTERM: %d\n' "$rc"
echo "a sample REPORT line:"
grep -m1 'mod=report' "$log" | sed 's/^/  /'
echo "full wispd log: kept only for this run ($log is removed on exit)"
echo "========================================================================="
[ "$rc" -eq 0 ] || exit "$rc"

# The fleet: a control plane, two gateways that sync with it, a signed
# deploy by label with a canary, and the metering it collected.
echo
echo "== fleet: wisp-cloud and two gateways (gw-a, gw-b) with cloud sync on the same broker"
export WISP_CLOUD_TOKEN=quickstart-$RANDOM$RANDOM
printf '%s\n' "$WISP_CLOUD_TOKEN" >"$TEST_TMP/cloud.token"
"$wisp" keygen "$TEST_TMP/publisher" >/dev/null
mkdir -p "$TEST_TMP/trust" "$TEST_TMP/none"
cp "$TEST_TMP/publisher.pub" "$TEST_TMP/trust/publisher.pem"
"$root/build/cloud-sync/server/wisp-cloud" --broker "$BROKER_URI" --listen 127.0.0.1:0 \
  --data "$TEST_TMP/cloud" --token-file "$TEST_TMP/cloud.token" >"$TEST_TMP/cloud.log" 2>&1 &
fleet_pids=$!
wait_for 10 "wisp-cloud" test -s "$TEST_TMP/cloud/http.port" || { cat "$TEST_TMP/cloud.log"; exit 1; }
export WISP_CLOUD_URL=http://127.0.0.1:$(cat "$TEST_TMP/cloud/http.port")
for gw in gw-a gw-b; do
  "$wispd" --functions "$TEST_TMP/none" --broker "$BROKER_URI" --data "$TEST_TMP/data-$gw" \
    --device "$gw" --cloud --cloud-labels site=demo --cloud-trust "$TEST_TMP/trust" \
    >"$TEST_TMP/$gw.log" 2>&1 &
  fleet_pids="$fleet_pids $!"
done
wait_for 10 "gateways registered" bash -c "'$wisp' devices 2>/dev/null | grep -c '^gw-' | grep -qx 2" ||
  { cat "$TEST_TMP/cloud.log"; exit 1; }
"$wisp" devices
echo "== wisp deploy examples/unit-convert --to site=demo --canary 50% --bake 2s (signed)"
"$wisp" deploy "$examples/unit-convert" --to site=demo --key "$TEST_TMP/publisher.key" \
  --canary 50% --bake 2s --wait 30
for i in 1 2 3 4 5; do
  mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -t sensors/fleet/temp -m "{\"temp\": 2$i}"
done
sleep 1.5 # the gateways send their metering records about once a second
echo "== wisp devices; wisp meter --by device (records the gateways sent, hash-chained)"
"$wisp" devices
"$wisp" meter --by device
echo "========================================================================="
