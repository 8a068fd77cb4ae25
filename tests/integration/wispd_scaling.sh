#!/usr/bin/env bash
# Executors scale out with queued work up to limits.concurrency and the
# gateway-wide executors.max, and scale to zero after the idle timeout (the
# next event is a cold start).
source "$(dirname "$0")/../lib/wispd_test.sh"
broker_start

busy='return function(e, ctx)
  local t = os.clock(); while os.clock() - t < 0.2 do end
  ctx.publish("out/" .. ctx.fn.name, e.payload)
end'
make_fn "$fns" wide 't/wide' "$busy" '"limits": {"concurrency": 3, "timeout_ms": 2000}'
make_fn "$fns" narrow 't/narrow' "$busy" '"limits": {"concurrency": 1, "timeout_ms": 2000}'

executors() { # executors are the zygote's children
  local zygote
  zygote=$(pgrep -P "$(wispd_pid "$1")" | head -1)
  pgrep -P "$zygote" | wc -l
}

wispd_start gw "$fns" --idle-timeout-ms 3000
log=$(wispd_log gw)
sub_start out 'out/#'
for i in $(seq 1 6); do pub t/wide "w$i"; pub t/narrow "n$i"; done
sub_wait out 12 30
wide_cold=$(grep -c 'mod=report fn=wide .*cold=1' "$log" || true)
narrow_cold=$(grep -c 'mod=report fn=narrow .*cold=1' "$log" || true)
[ "$wide_cold" -eq 3 ] || fail "wide (concurrency 3) started $wide_cold executors, expected 3"
[ "$narrow_cold" -eq 1 ] || fail "narrow (concurrency 1) started $narrow_cold executors, expected 1"
# narrow keeps its order (one executor, FIFO).
[ "$(grep '^out/narrow' "$TEST_TMP/out.out" | cut -d' ' -f2 | tr '\n' ' ')" = "n1 n2 n3 n4 n5 n6 " ] ||
  fail "narrow out of order: $(grep '^out/narrow' "$TEST_TMP/out.out")"
# At most 3 + 1 executors are warm now (fewer if some already idled out).
n=$(executors gw)
[ "$n" -ge 1 ] && [ "$n" -le 4 ] || fail "expected 1 to 4 warm executors, found $n"
# Idle executors go away after the idle timeout...
wait_for 20 "scale to zero" bash -c "[ \$(pgrep -P \$(pgrep -P $(wispd_pid gw) | head -1) | wc -l) -eq 0 ]" ||
  fail "executors still running after the idle timeout: $(executors gw)"
# ...and the next event is a cold start again.
pub t/narrow again
sub_wait out 13
[ "$(grep -c 'mod=report fn=narrow .*cold=1' "$log")" -eq 2 ] || fail "the event after idling was not a cold start"
wispd_stop gw

# The gateway-wide cap holds across functions.
wispd_start cap "$fns" --max-executors 2
log=$(wispd_log cap)
sub_start out2 'out/#'
for i in $(seq 1 4); do pub t/wide "w$i"; pub t/narrow "n$i"; done
peak=0
for _ in $(seq 1 40); do
  n=$(executors cap); [ "$n" -gt "$peak" ] && peak=$n
  [ "$(sub_count out2)" -ge 8 ] && break
  sleep 0.05
done
sub_wait out2 8 30
[ "$peak" -le 2 ] || fail "executors.max 2 exceeded: saw $peak"
wispd_stop cap
pass
