#!/usr/bin/env bash
# SIGTERM stops intake, finishes accepted work and exits 0; past
# shutdown_timeout_ms it abandons what is left, says so, and still exits 0.
source "$(dirname "$0")/../lib/wispd_test.sh"
broker_start

make_fn "$fns" slow 't/slow' 'return function(e, ctx)
  ctx.log.info("working on", e.payload)
  local t = os.clock(); while os.clock() - t < 0.3 do end
  ctx.publish("out/slow", e.payload, {qos = 1})
end' '"limits": {"timeout_ms": 2000}'

# 1. Everything accepted before SIGTERM is finished and published.
wispd_start gw "$fns"
log=$(wispd_log gw)
sub_start out 'out/#'
for i in 1 2 3 4 5; do pub t/slow "e$i" -q 1; done
# e2 starts 300 ms after e1, long after all five reached wispd.
wait_for 10 "second event running" grep -q 'working on e2' "$log" || fail "nothing started"
wispd_stop gw
grep -q 'drained' "$log" || fail "no drain message"
sub_wait out 5
for i in 1 2 3 4 5; do grep -qx "out/slow e$i" "$TEST_TMP/out.out" || fail "e$i lost in the drain"; done

# 2. A deadline shorter than the work: abandoned events are counted, exit 0.
wispd_start gw2 "$fns" --shutdown-timeout-ms 400
log2=$(wispd_log gw2)
for i in 1 2 3 4 5 6; do pub t/slow "f$i" -q 1; done
wait_for 10 "first event running" grep -q 'working on f1' "$log2" || fail "nothing started"
wispd_stop gw2
grep -Eq 'shutdown_timeout_ms reached: [1-9][0-9]* event\(s\) abandoned' "$log2" || fail "abandoned work not reported"
pass
