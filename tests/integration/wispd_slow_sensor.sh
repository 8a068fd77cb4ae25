#!/usr/bin/env bash
# A sensor that blocks 800 ms per read (like a 1-Wire conversion) does not
# hold up wispd: reads happen on the sensor reader thread, so a 20 ms timer
# keeps its schedule while the slow sensor is polled and read through
# ctx.sensor; polls due while a read still runs are skipped and counted.
source "$(dirname "$0")/../lib/wispd_test.sh"
broker_start
cat >"$TEST_TMP/wispd.json" <<'EOF2'
{"sensors": {"slow": {"port": "sim", "mode": "constant", "value": 5, "unit": "°C", "read_ms": 800}}}
EOF2
mkdir -p "$fns/tick" "$fns/slowpoll"
echo '{"name": "tick", "triggers": [{"type": "timer", "every": "20ms"}]}' >"$fns/tick/function.json"
echo 'return function(e, ctx) ctx.publish("out/tick", tostring(e.data.late_us)) end' >"$fns/tick/handler.lua"
echo '{"name": "slowpoll", "triggers": [{"type": "sensor", "sensor": "slow", "every": "100ms"}]}' \
  >"$fns/slowpoll/function.json"
echo 'return function(e, ctx) ctx.publish("out/poll", tostring(e.data.value)) end' >"$fns/slowpoll/handler.lua"
make_fn "$fns" probe 'probe/#' 'return function(e, ctx)
  local t = ctx.now()
  local r, err = ctx.sensor("slow")
  ctx.publish("out/probe", string.format("%s %d", r and tostring(r.value) or err, math.floor((ctx.now() - t) * 1000)))
end' '"limits": {"timeout_ms": 3000}'
sub_start out 'out/#'
wispd_start gw "$fns" --config "$TEST_TMP/wispd.json" --durability none
pub probe/x go
sub_wait out 1 10
sleep 3
wispd_stop gw
sub_lines out >/dev/null
grep -Eq '^out/probe 5(\.0)? [0-9]+$' "$TEST_TMP/out.out" || fail "ctx.sensor on the slow sensor: $(grep '^out/probe' "$TEST_TMP/out.out")"
ms=$(grep '^out/probe' "$TEST_TMP/out.out" | awk '{print $3}')
[ "$ms" -ge 700 ] || fail "the slow read took $ms ms: the delay did not apply"
polls=$(grep -Ec '^out/poll 5(\.0)?$' "$TEST_TMP/out.out" || true)
[ "$polls" -ge 1 ] || fail "the slow sensor trigger never delivered a reading"
grep '^out/tick' "$TEST_TMP/out.out" | awk '{print $2}' | sort -n >"$TEST_TMP/late"
n=$(grep -c '' "$TEST_TMP/late")
[ "$n" -ge 100 ] || fail "the 20 ms timer fired only $n times in about 4 s"
p90=$(awk -v n="$n" 'NR == int(n * 0.9) {print $1}' "$TEST_TMP/late")
max=$(tail -1 "$TEST_TMP/late")
echo "timer lateness while the slow sensor was read: p90 $p90 us, max $max us over $n firings" >&2
[ "$p90" -lt 100000 ] && [ "$max" -lt 700000 ] || fail "the timer waited for the slow sensor (p90 $p90 us, max $max us)"
busy=$(grep -o 'sensor_busy=[0-9]*' "$(wispd_log gw)" | cut -d= -f2)
[ "${busy:-0}" -gt 0 ] || fail "polls due during a slow read were not skipped and counted (sensor_busy=$busy)"
pass
