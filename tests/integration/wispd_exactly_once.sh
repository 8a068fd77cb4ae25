#!/usr/bin/env bash
# Exactly-once across crashes: a publisher streams 10,000 QoS 1 events
# (mosquitto_pub retries each until the broker's PUBACK) while wispd is
# killed with SIGKILL at random moments, 20 times, and restarted on the
# same data dir. Afterwards the function's counter (ctx.state.incr, one per
# event, concurrency 4) equals the number of acknowledged events exactly,
# and every event's output arrived at least once.
source "$(dirname "$0")/../lib/wispd_test.sh"
N=${WISP_EO_EVENTS:-10000}
ROUNDS=${WISP_EO_ROUNDS:-20}
# The broker keeps everything for wispd's durable session while it is down.
broker_start "max_queued_messages 0" "max_inflight_messages 200"

make_fn "$fns" count 'in/#' 'return function(e, ctx)
  ctx.state.incr("count")
  ctx.publish("out/seen", e.payload, {qos = 1})
end' '"limits": {"concurrency": 4}'
sed -i 's/"qos": 0/"qos": 1/' "$fns/count/function.json"
data=$TEST_TMP/data
mkdir -p "$data"
sub_start out 'out/#' -q 1 -c -i wisp-eo-consumer

round=0
start_gw() {
  round=$((round + 1))
  local log=$TEST_TMP/wispd-$round.log
  "$WISPD" --functions "$fns" --broker "$BROKER_URI" --data "$data" --device gw \
    --log-level warn >"$log" 2>&1 &
  GW=$!
  track_pid "$GW"
}
start_gw
# Wait for the durable session's subscription before publishing.
sleep 1

# The publisher: N events, paced so that the kills fall inside the stream.
( for i in $(seq 1 "$N"); do echo "$i"; if (( i % 100 == 0 )); then sleep 0.05; fi; done |
    mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -l -q 1 -t in/x -i wisp-eo-pub ) &
PUB=$!
track_pid "$PUB"

for ((k = 0; k < ROUNDS; k++)); do
  sleep "0.$((RANDOM % 6 + 2))"
  kill -KILL "$GW" 2>/dev/null || true
  wait "$GW" 2>/dev/null || true
  start_gw
done
wait "$PUB" || fail "the publisher failed: not every event was acknowledged by the broker"
echo "all $N events acknowledged by the broker; $ROUNDS kills done" >&2

count() { "$WISP" state count get count --data "$data" 2>/dev/null || echo 0; }
wait_for 180 "counter reaches $N" bash -c "[ \"\$('$WISP' state count get count --data '$data' 2>/dev/null)\" = $N ]" || {
  for f in "$TEST_TMP"/wispd-*.log; do tail -n 5 "$f" >&2; done
  fail "counter is $(count), expected exactly $N"
}
sleep 2
got=$(count)
[ "$got" = "$N" ] || fail "counter moved on to $got after reaching $N (an event ran twice)"

missing=0
wait_for 60 "all outputs" bash -c "[ \$(grep -v '^wisp-test-probe/' '$TEST_TMP/out.raw' | sort -u | grep -c '') -ge $N ]" || true
sub_lines out | awk '{print $2}' | sort -n -u >"$TEST_TMP/seen"
seq 1 "$N" >"$TEST_TMP/want"
missing=$(comm -23 "$TEST_TMP/want" "$TEST_TMP/seen" | wc -l)
[ "$missing" -eq 0 ] || fail "$missing output(s) never arrived (e.g. $(comm -23 "$TEST_TMP/want" "$TEST_TMP/seen" | head -3 | tr '\n' ' '))"
dups=$(( $(sub_count out) - N ))
echo "counter $got, outputs complete, $dups duplicate output(s) (allowed: at least once, ids identical)" >&2
kill -TERM "$GW"; wait "$GW" || fail "wispd did not stop cleanly"
pass
