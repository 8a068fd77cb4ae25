#!/usr/bin/env bash
# SIGTERM in the middle of a QoS 1 stream: every message wispd acknowledged
# to the broker (PUBACK, counted in the broker's own log) is run before
# wispd exits, none is dropped between "stop intake" and "drained".
source "$(dirname "$0")/../lib/wispd_test.sh"
broker_start "log_type all"
FN_QOS=1 make_fn "$fns" quick 't/q' 'return function(e, ctx) end'
wispd_start gw "$fns"
log=$(wispd_log gw)
# The publisher itself is the tracked process (a subshell around it would
# leave it running, holding the test's output open, after cleanup).
seq 1 400000 >"$TEST_TMP/stream"
mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -t t/q -q 1 -l <"$TEST_TMP/stream" &
track_pid $!
wait_for 20 "a stream in progress" bash -c "[ \$(grep -c mod=report '$log') -ge 2000 ]" ||
  fail "the stream did not start"
wispd_stop gw
acked=$(grep -c 'Received PUBACK from wisp-gw' "$TEST_TMP/broker.log" || true)
ran=$(grep -c 'mod=report fn=quick .*outcome=ok' "$log" || true)
echo "acknowledged by wispd: $acked, run: $ran"
[ "$acked" -ge 2000 ] || fail "too few messages acknowledged ($acked)"
[ "$ran" -eq "$acked" ] || fail "$acked messages acknowledged but $ran run: accepted events were lost"
grep -q 'drained' "$log" || fail "no drain message"
pass
