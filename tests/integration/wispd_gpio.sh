#!/usr/bin/env bash
# GPIO through wispd: a gpio trigger on a character-device chip (the linux
# port's real code over a fake chip below it: tests/fakes/gpio_fake.c,
# preloaded) fires on the requested edges with debounce; ctx.gpio drives a
# declared output line and is refused for any other; a simulated chip from
# the config produces edges; `wisp gpio` lists the lines; a trigger on a
# missing chip is reported and the rest keeps working.
source "$(dirname "$0")/../lib/wispd_test.sh"
broker_start
FAKE=$WISP_BUILD_DIR/tests/libwisp_gpio_fake.so
EDGE=$WISP_BUILD_DIR/tests/gpio_fake_edge
[ -f "$FAKE" ] && [ -x "$EDGE" ] || fail "build the GPIO fake first ($FAKE, $EDGE)"
# The fake is not built with the sanitizers; let an ASan wispd load it.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"

dev=$TEST_TMP/dev
mkdir -p "$dev"
printf 'label=fake-bcm\nlines=32\nname17=BUTTON\nname18=LED\n' >"$dev/gpiochip0"
cat >"$TEST_TMP/wispd.json" <<EOF
{"ports": {"dev_root": "$dev"},
 "gpio": {"sim0": {"port": "sim", "lines": 8, "edges": [{"line": 2, "every": "100ms"}]}}}
EOF

mkdir -p "$fns/button" "$fns/blink" "$fns/nochip"
cat >"$fns/button/function.json" <<'EOF'
{"name": "button",
 "triggers": [{"type": "gpio", "chip": "gpiochip0", "line": 17, "edge": "falling", "debounce_ms": 20}],
 "gpio": {"outputs": [{"chip": "gpiochip0", "line": 18}]}}
EOF
cat >"$fns/button/handler.lua" <<'EOF'
return function(e, ctx)
  local n = ctx.state.incr("presses")
  ctx.gpio("gpiochip0", 18, n % 2)
  local ok, err = pcall(ctx.gpio, "gpiochip0", 19, 1)
  ctx.publish("out/button", string.format("%s %s %s %d %s led=%d", e.type, e.source, e.data.edge,
    e.data.timestamp_ns, tostring(ok), ctx.gpio("gpiochip0", 18)), {qos = 1})
  if not ok then ctx.publish("out/refused", err, {qos = 1}) end
end
EOF
cat >"$fns/blink/function.json" <<'EOF'
{"name": "blink", "triggers": [{"type": "gpio", "chip": "sim0", "line": 2}]}
EOF
cat >"$fns/blink/handler.lua" <<'EOF'
return function(e, ctx) ctx.publish("out/blink", e.data.edge .. " " .. e.subject) end
EOF
cat >"$fns/nochip/function.json" <<'EOF'
{"name": "nochip", "triggers": [{"type": "gpio", "chip": "gpiochip7", "line": 1}]}
EOF
echo 'return function() end' >"$fns/nochip/handler.lua"

sub_start out 'out/#' -q 1
LD_PRELOAD=$FAKE wispd_start gw "$fns" --config "$TEST_TMP/wispd.json"
log=$(wispd_log gw)
grep -q 'nochip: gpio trigger: .*gpiochip7' "$log" || fail "a trigger on a missing chip was not reported"
grep -q '^input edges=falling debounce_us=20000' "$dev/gpiochip0.line17.request" ||
  fail "line 17 was not requested as asked: $(cat "$dev/gpiochip0.line17.request")"

# falling, a bounce 5 ms later, a rising edge, a falling edge 50 ms on.
t=5000000000
"$EDGE" "$dev/gpiochip0" 17 falling "$t" 1
"$EDGE" "$dev/gpiochip0" 17 falling $((t + 5000000)) 2
"$EDGE" "$dev/gpiochip0" 17 rising $((t + 20000000)) 3
"$EDGE" "$dev/gpiochip0" 17 falling $((t + 50000000)) 4
sub_wait out 4 15 # two presses and two refusals, plus blinks
wait_for 10 "two presses" bash -c "[ \$(grep -c '^out/button' '$TEST_TMP/out.raw') -ge 2 ]" ||
  fail "button presses: $(grep '^out/button' "$TEST_TMP/out.raw")"
sleep 0.5
got=$(grep '^out/button' "$TEST_TMP/out.raw" | cut -d' ' -f2-)
want="wisp.gpio.edge wisp://gw/gpio/gpiochip0/17 falling $t false led=1
wisp.gpio.edge wisp://gw/gpio/gpiochip0/17 falling $((t + 50000000)) false led=0"
[ "$got" = "$want" ] || fail "edges through debounce and the edge filter: got
$got
expected
$want"
[ "$(cat "$dev/gpiochip0.line18.value")" = 0 ] || fail "line 18 does not hold the last value written"
grep -q '^output value=1 consumer=wisp:button' "$dev/gpiochip0.line18.request" ||
  fail "line 18 was not requested as an output: $(cat "$dev/gpiochip0.line18.request")"
grep -q "^out/refused .*gpio: gpiochip0 line 19: this function may drive only lines listed in function.json's \"gpio.outputs\"" \
  "$TEST_TMP/out.raw" || fail "driving an undeclared line was not refused clearly: $(grep '^out/refused' "$TEST_TMP/out.raw" | head -1)"
[ ! -e "$dev/gpiochip0.line19.value" ] || fail "the undeclared line was touched"

# The simulated chip: an edge every 100 ms on sim0 line 2.
wait_for 10 "sim edges" bash -c "[ \$(grep -c '^out/blink' '$TEST_TMP/out.raw') -ge 8 ]" ||
  fail "sim edges: $(grep -c '^out/blink' "$TEST_TMP/out.raw")"
grep -q '^out/blink rising sim0/2$' "$TEST_TMP/out.raw" && grep -q '^out/blink falling sim0/2$' "$TEST_TMP/out.raw" ||
  fail "sim edges should alternate rising/falling"

# wisp gpio: the config's sim chip and the fake character device, with the
# line wispd holds.
LD_PRELOAD=$FAKE "$WISP" gpio --config "$TEST_TMP/wispd.json" >"$TEST_TMP/gpio.out" || fail "wisp gpio failed: $(cat "$TEST_TMP/gpio.out")"
grep -q '^sim0 \[.*\] 8 lines (from the config)' "$TEST_TMP/gpio.out" || fail "wisp gpio: $(cat "$TEST_TMP/gpio.out")"
grep -q '^gpiochip0 \[fake-bcm\] 32 lines' "$TEST_TMP/gpio.out" || fail "wisp gpio: no gpiochip0"
grep -q '^  line  17: BUTTON ' "$TEST_TMP/gpio.out" || fail "wisp gpio: line names"
wispd_stop gw

# A gpio trigger on a line of a chip that is not there does not stop wispd,
# but a bad chip setting does, naming the key.
cat >"$TEST_TMP/bad.json" <<EOF
{"gpio": {"sim0": {"port": "sim", "lines": 0}}}
EOF
rc=0
"$WISPD" --functions "$fns" --broker "$BROKER_URI" --data "$TEST_TMP/data-bad" --config "$TEST_TMP/bad.json" \
  >"$TEST_TMP/bad.log" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "wispd started with a bad chip setting"
grep -q 'bad.json:gpio.sim0.lines' "$TEST_TMP/bad.log" || fail "bad chip setting not named: $(cat "$TEST_TMP/bad.log")"
pass
