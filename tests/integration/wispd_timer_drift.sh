#!/usr/bin/env bash
# A 100 ms timer over a minute (WISP_DRIFT_S): every firing is scheduled
# exactly at start + k x 100 ms (no drift accumulates), the last one is a
# minute of wall clock after the first, and every period is accounted for:
# fired + skipped (wispd too late) = periods elapsed. Lateness is reported,
# not judged (the machine may be busy).
source "$(dirname "$0")/../lib/wispd_test.sh"
SECONDS_RUN=${WISP_DRIFT_S:-60}
broker_start
mkdir -p "$fns/tick"
echo '{"name": "tick", "triggers": [{"type": "timer", "every": "100ms"}]}' >"$fns/tick/function.json"
cat >"$fns/tick/handler.lua" <<'EOF'
return function(e, ctx) ctx.publish("out/tick", e.data.scheduled_us .. " " .. e.data.late_us) end
EOF
sub_start out 'out/#'
wispd_start gw "$fns"
t0=$(date +%s%N)
sleep "$SECONDS_RUN"
wispd_stop gw
t1=$(date +%s%N)
sub_lines out | awk '{print $2, $3}' >"$TEST_TMP/ticks"
n=$(grep -c '' "$TEST_TMP/ticks")
[ "$n" -ge $((SECONDS_RUN * 10 * 9 / 10)) ] || fail "only $n firings in $SECONDS_RUN s"
first=$(head -1 "$TEST_TMP/ticks" | cut -d' ' -f1)
last=$(tail -1 "$TEST_TMP/ticks" | cut -d' ' -f1)
# Each scheduled time is first + k * 100 ms exactly, and increasing.
awk -v f="$first" 'BEGIN {prev = -1}
  { d = $1 - f; if (d % 100000 != 0) { print "off the grid: " $1; bad = 1 }
    if ($1 <= prev) { print "not increasing: " $1; bad = 1 } prev = $1 }
  END { exit bad }' "$TEST_TMP/ticks" || fail "the schedule drifted"
periods=$(( (last - first) / 100000 + 1 ))
span_us=$(( last - first ))
wall_us=$(( (t1 - t0) / 1000 ))
[ "$span_us" -le "$wall_us" ] && [ "$span_us" -ge $((wall_us - 3000000)) ] ||
  fail "the schedule spans $span_us us, wall clock $wall_us us"
stats=$(grep -o 'timer_fired=[0-9]* timer_missed=[0-9]*' "$(wispd_log gw)")
fired=$(sed 's/timer_fired=\([0-9]*\).*/\1/' <<<"$stats")
missed=$(sed 's/.*timer_missed=\([0-9]*\)/\1/' <<<"$stats")
# The firings seen plus the periods skipped cover the schedule from the
# first to the last (the first firing seen is the first of the run).
[ "$fired" -eq "$n" ] || fail "wispd fired $fired, the subscriber saw $n"
[ $((fired + missed)) -eq "$periods" ] || fail "fired $fired + skipped $missed != $periods periods"
sort -n -k2 "$TEST_TMP/ticks" | awk '{a[NR]=$2} END {printf "timer lateness over %d firings: p50 %d us, p99 %d us, max %d us\n", NR, a[int(NR/2)], a[int(NR*0.99)], a[NR]}' >&2
echo "skipped periods: $missed" >&2
pass
