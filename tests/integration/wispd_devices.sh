#!/usr/bin/env bash
# Timers, sensors and ctx.sensor through wispd: "every" and cron timers
# fire on schedule; sensor triggers over a fake IIO sysfs tree fire on
# change and on threshold crossings with hysteresis; ctx.sensor returns a
# reading, and an error value for a missing sensor or a failing read; a
# timer keeps producing while the broker is away and every output arrives,
# in order. Bad sensor settings stop wispd with a message naming the key.
source "$(dirname "$0")/../lib/wispd_test.sh"
BROKER_PERSIST=1 broker_start "max_queued_messages 0"

sys=$TEST_TMP/sys
iio=$sys/bus/iio/devices/iio:device0
mkdir -p "$iio"
echo 21000 >"$iio/in_temp_raw" # milli degrees Celsius
echo 40 >"$iio/in_voltage0_raw"
echo 1.5 >"$iio/in_voltage_scale"
cat >"$TEST_TMP/wispd.json" <<EOF
{"ports": {"sysfs_root": "$sys"},
 "sensors": {
   "room": {"port": "iio", "device": "iio:device0", "channel": "in_temp"},
   "tank": {"port": "iio", "device": "iio:device0", "channel": "in_voltage0", "unit": "cm"},
   "wave": {"port": "sim", "mode": "constant", "value": 7.5, "unit": "bar"}
 }}
EOF

mkdir -p "$fns/tick" "$fns/cron" "$fns/room" "$fns/tank" "$fns/probe" "$fns/lost"
cat >"$fns/tick/function.json" <<'EOF'
{"name": "tick", "triggers": [{"type": "timer", "every": "200ms"}]}
EOF
cat >"$fns/tick/handler.lua" <<'EOF'
return function(e, ctx)
  local n = ctx.state.incr("n")
  ctx.publish("out/tick", string.format("%d %s %s %s", n, e.type, e.subject, e.data.schedule), {qos = 1})
end
EOF
cat >"$fns/cron/function.json" <<'EOF'
{"name": "cron", "triggers": [{"type": "timer", "cron": "*/1 * * * * *"}]}
EOF
cat >"$fns/cron/handler.lua" <<'EOF'
return function(e, ctx) ctx.publish("out/cron", e.data.scheduled) end
EOF
cat >"$fns/room/function.json" <<'EOF'
{"name": "room", "triggers": [{"type": "sensor", "sensor": "room", "every": "50ms", "change": 1.0}]}
EOF
cat >"$fns/room/handler.lua" <<'EOF'
return function(e, ctx)
  ctx.publish("out/room", string.format("%s %s %g %s %s", e.type, e.source, e.data.value, e.data.unit, e.data.reason))
end
EOF
cat >"$fns/tank/function.json" <<'EOF'
{"name": "tank", "triggers": [{"type": "sensor", "sensor": "tank", "every": "50ms", "above": 75, "hysteresis": 6}]}
EOF
cat >"$fns/tank/handler.lua" <<'EOF'
return function(e, ctx) ctx.publish("out/tank", string.format("%g %s", e.data.value, e.data.reason)) end
EOF
FN_QOS=0 make_fn "$fns" probe 'probe/#' 'return function(e, ctx)
  local r, err = ctx.sensor(e.payload)
  if r then ctx.publish("out/probe", string.format("%s=%g%s t=%s", e.payload, r.value, r.unit, tostring(r.time > 1e9)))
  else ctx.publish("out/probe", "error " .. err) end
end'
cat >"$fns/lost/function.json" <<'EOF'
{"name": "lost", "triggers": [{"type": "sensor", "sensor": "nowhere"}]}
EOF
echo 'return function() end' >"$fns/lost/handler.lua"

sub_start out 'out/#' -q 1 -c -i wisp-devices-consumer
wispd_start gw "$fns" --config "$TEST_TMP/wispd.json"
log=$(wispd_log gw)
grep -qF 'lost: triggers[0].sensor: no sensor \"nowhere\"' "$log" ||
  fail "a sensor trigger naming an unknown sensor was not reported"

# ctx.sensor: a reading, the unit override, a sim sensor, an unknown name.
pub probe/a room
pub probe/a tank
pub probe/a wave
pub probe/a nowhere
wait_for 10 "probe answers" bash -c "[ \$(grep -c '^out/probe' '$TEST_TMP/out.raw') -ge 4 ]" ||
  fail "ctx.sensor did not answer: $(grep '^out/probe' "$TEST_TMP/out.raw")"
grep -q '^out/probe room=21°C t=true$' "$TEST_TMP/out.raw" || fail "room reading wrong: $(grep '^out/probe' "$TEST_TMP/out.raw")"
grep -q '^out/probe tank=60cm t=true$' "$TEST_TMP/out.raw" || fail "tank reading (40 * 1.5 cm) wrong"
grep -q '^out/probe wave=7.5bar t=true$' "$TEST_TMP/out.raw" || fail "sim reading wrong"
grep -q '^out/probe error sensor: sensor "nowhere" is not configured (configured: room, tank, wave)$' \
  "$TEST_TMP/out.raw" || fail "an unknown sensor did not give a clear error value"

# A failing read is an error value too, and the trigger logs it once.
mv "$iio/in_temp_raw" "$iio/in_temp_raw.away"
pub probe/a room
wait_for 10 "error for a missing file" grep -q "^out/probe error sensor: room: .*in_temp_raw: No such file" "$TEST_TMP/out.raw" ||
  fail "a failing read was not an error value: $(grep '^out/probe' "$TEST_TMP/out.raw" | tail -1)"
wait_for 5 "trigger read error logged" grep -q 'room: sensor trigger: room: .*in_temp_raw' "$log" ||
  fail "the sensor trigger did not log its read error"
mv "$iio/in_temp_raw.away" "$iio/in_temp_raw"

# change 1.0: the first reading fires, 21.4 does not, 22.5 and 20 do.
wait_for 10 "first room reading" grep -q '^out/room wisp.sensor.reading wisp://gw/sensor/room 21 °C change$' "$TEST_TMP/out.raw" ||
  fail "no first reading: $(grep '^out/room' "$TEST_TMP/out.raw")"
for v in 21400 22500 22600 20000; do echo $v >"$iio/in_temp_raw"; sleep 0.3; done
wait_for 10 "room changes" bash -c "[ \$(grep -c '^out/room' '$TEST_TMP/out.raw') -ge 3 ]" || true
got=$(grep '^out/room' "$TEST_TMP/out.raw" | awk '{print $4}' | tr '\n' ' ')
[ "$got" = "21 22.5 20 " ] || fail "change deadband fired for: $got (expected 21 22.5 20)"

# above 75 with hysteresis 6 (tank = raw * 1.5): 60, 78 fires, 76.5 and 72
# stay quiet (not back below 69), 67.5 re-arms, 79.5 fires again.
for raw in 52 51 48 45 53; do echo $raw >"$iio/in_voltage0_raw"; sleep 0.3; done
wait_for 10 "two tank alerts" bash -c "[ \$(grep -c '^out/tank' '$TEST_TMP/out.raw') -ge 2 ]" || true
got=$(grep '^out/tank' "$TEST_TMP/out.raw" | awk '{print $2 "/" $3}' | tr '\n' ' ')
[ "$got" = "78/above 79.5/above " ] || fail "threshold with hysteresis fired for: $got"

# The 200 ms timer: about 5 per second, and cron fires on whole seconds.
t0=$(grep -c '^out/tick' "$TEST_TMP/out.raw")
sleep 3
t1=$(grep -c '^out/tick' "$TEST_TMP/out.raw")
[ $((t1 - t0)) -ge 13 ] && [ $((t1 - t0)) -le 17 ] || fail "every 200ms fired $((t1 - t0)) times in 3 s"
grep -q '^out/tick [0-9]* wisp.timer.fired every 200ms every 200ms$' "$TEST_TMP/out.raw" ||
  fail "timer event attributes wrong: $(grep '^out/tick' "$TEST_TMP/out.raw" | head -1)"
c=$(grep -c '^out/cron' "$TEST_TMP/out.raw")
[ "$c" -ge 3 ] || fail "cron every second fired $c times"
grep '^out/cron' "$TEST_TMP/out.raw" | grep -qv '\.000Z$' && fail "cron firings not on whole seconds"

# The broker goes away for 4 s: the timer keeps producing and every
# numbered output arrives afterwards, in order.
broker_stop
sleep 4
broker_restart
last=$("$WISP" state tick get n --data "$TEST_TMP/data-gw")
[ "${last:-0}" -gt 25 ] || fail "the timer did not keep producing while the broker was away (n=$last)"
wait_for 30 "all $last tick outputs" bash -c "[ \$(grep '^out/tick' '$TEST_TMP/out.raw' | awk '{print \$2}' | sort -un | grep -c '') -ge $last ]" ||
  fail "tick outputs missing: $(grep '^out/tick' "$TEST_TMP/out.raw" | awk '{print $2}' | sort -un | grep -c '') of $last"
wispd_stop gw
grep '^out/tick' "$TEST_TMP/out.raw" | awk '{print $2}' | awk '!seen[$1]++' >"$TEST_TMP/first"
sort -n "$TEST_TMP/first" | cmp -s - "$TEST_TMP/first" || fail "tick outputs arrived out of order"
[ "$(head -1 "$TEST_TMP/first")" = 1 ] || fail "the first tick output is missing"

# Bad settings stop wispd with the key named.
cat >"$TEST_TMP/bad.json" <<EOF
{"sensors": {"tank": {"port": "iio", "device": "iio:device0", "channel": "in_voltage0", "colour": "red"}}}
EOF
rc=0
"$WISPD" --functions "$fns" --broker "$BROKER_URI" --data "$TEST_TMP/data-bad" --config "$TEST_TMP/bad.json" \
  >"$TEST_TMP/bad.log" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "wispd started with a bad sensor setting"
grep -q 'bad.json:sensors.tank.colour' "$TEST_TMP/bad.log" || fail "bad setting not named: $(cat "$TEST_TMP/bad.log")"

# wisp sensors: a live reading per sensor; a failing one says why.
"$WISP" sensors --config "$TEST_TMP/wispd.json" >"$TEST_TMP/sensors.out" || fail "wisp sensors failed"
grep -q '^room  *iio  *20  *°C' "$TEST_TMP/sensors.out" || fail "wisp sensors: $(cat "$TEST_TMP/sensors.out")"
grep -q '^wave  *sim  *7.5  *bar' "$TEST_TMP/sensors.out" || fail "wisp sensors: sim missing"
rm "$iio/in_voltage0_raw"
rc=0
"$WISP" sensors --config "$TEST_TMP/wispd.json" >"$TEST_TMP/sensors.out" || rc=$?
[ "$rc" -eq 1 ] || fail "wisp sensors exited $rc with a failing sensor"
grep -q '^tank .*error: .*in_voltage0_raw' "$TEST_TMP/sensors.out" || fail "wisp sensors hid the error"
pass
