#!/usr/bin/env bash
# The broker is away for 30 s while a function keeps producing (it works
# through a backlog of durable events): its outputs wait in the outbox and
# all arrive, in order, once the broker is back. Nothing is lost.
source "$(dirname "$0")/../lib/wispd_test.sh"
OUTAGE=${WISP_OUTAGE_S:-30}
BROKER_PERSIST=1 broker_start "max_queued_messages 0"
# 40 ms per event: 600 events keep it busy for 24 s.
FN_QOS=1 make_fn "$fns" slow 'in/#' 'return function(e, ctx)
  local t = os.clock(); while os.clock() - t < 0.04 do end
  ctx.publish("out/seq", e.payload, {qos = 1})
end'
wispd_start gw "$fns" --mqtt-version 5
sub_start out 'out/#' -q 1 -c -i wisp-outage-consumer
sleep 1
N=600
seq 1 "$N" | mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -l -q 1 -t in/x
log=$(wispd_log gw)
wait_for 20 "first outputs" bash -c "[ \$(grep -c '^out/seq' '$TEST_TMP/out.raw') -ge 10 ]" || fail "nothing produced"
broker_stop
before=$(grep -c 'fn=slow .*outcome=ok' "$log")
sleep "$OUTAGE"
during=$(( $(grep -c 'fn=slow .*outcome=ok' "$log") - before ))
[ "$during" -gt 0 ] || fail "the function stopped producing while the broker was away"
echo "$during invocations while the broker was away" >&2
broker_restart
wait_for 120 "all $N outputs" bash -c "[ \$(grep '^out/seq' '$TEST_TMP/out.raw' | sort -u | grep -c '') -ge $N ]" || {
  fail "only $(grep '^out/seq' "$TEST_TMP/out.raw" | sort -u | grep -c '') of $N outputs arrived"
}
# In order: the first time each output shows up, they count up.
grep '^out/seq' "$TEST_TMP/out.raw" | awk '{print $2}' | awk '!seen[$1]++' >"$TEST_TMP/first"
sort -n "$TEST_TMP/first" | cmp -s - "$TEST_TMP/first" || fail "outputs arrived out of order"
wispd_stop gw
pass
