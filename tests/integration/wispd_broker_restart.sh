#!/usr/bin/env bash
# The broker restarts in the middle of a stream: wispd notices, reconnects
# and re-subscribes by itself, outputs produced while the broker was away
# are delivered once it is back, and events published afterwards are served.
source "$(dirname "$0")/../lib/wispd_test.sh"
BROKER_PERSIST=1 broker_start

# 100 ms per event, so a burst of 20 is still being worked on when the broker goes.
FN_QOS=1 make_fn "$fns" relay 'in/#' 'return function(e, ctx)
  local t = os.clock(); while os.clock() - t < 0.1 do end
  ctx.publish("out/relay", e.payload, {qos = 1})
end' '"limits": {"timeout_ms": 1000}'
wispd_start gw "$fns" --mqtt-version 5
log=$(wispd_log gw)
# A persistent QoS 1 subscriber: it gets what was sent while it was cut off.
sub_start out 'out/#' -q 1 -c -i wisp-test-sub

for i in $(seq 1 20); do pub in/a "m$i" -q 1; done
wait_for 10 "work in progress" grep -q 'fn=relay .*outcome=ok' "$log" || fail "nothing processed"
broker_restart
# Either client (Paho or wispd's own, see mqtt.client) logs its connections.
wait_for 30 "wispd reconnected" bash -c "[ \$(grep -c 'msg=\"connected to' '$log') -ge 2 ]" || fail "wispd did not reconnect"
for i in $(seq 21 30); do pub in/a "m$i" -q 1; done
# At least once: a QoS 1 message cut off by the restart is sent again, so a
# duplicate is allowed (its consumer can drop it by id); a gap is not.
all_arrived() {
  local i
  for i in $(seq 1 30); do grep -qx "out/relay m$i" "$TEST_TMP/out.raw" || return 1; done
}
wait_for 60 "all 30 outputs" all_arrived || {
  for i in $(seq 1 30); do grep -qx "out/relay m$i" "$TEST_TMP/out.raw" || echo "missing m$i" >&2; done
  fail "outputs lost across the broker restart"
}
grep -Eq 'lost the connection to|connection to .* lost' "$log" || fail "the outage was not logged"
wispd_stop gw
pass
