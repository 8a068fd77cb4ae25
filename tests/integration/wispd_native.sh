#!/usr/bin/env bash
# Native (C) handlers in a real wispd with a real mosquitto: the native example
# end to end over MQTT (alerts, its state counter, a bad reading retried into
# the dead-letter topic); handlers that segfault, abort or hang each cost one
# executor, follow their retry policy into the dead-letter topic, publish
# nothing, and wispd and the other functions go on; a library built for
# another ABI is refused with a clear message; `wisp run` prints the example's
# output. The libraries come from the build tree (examples/, tests/native/).
source "$(dirname "$0")/../lib/wispd_test.sh"
: "${WISP_BUILD_DIR:?}"
native=$WISP_BUILD_DIR/tests/native
example=$WISP_BUILD_DIR/examples/native-threshold
for f in "$native/hostile.so" "$native/abi7.so" "$example/handler.so" "$example/function.json"; do
  [ -f "$f" ] || fail "$f is missing: build the tree first (cmake --build)"
done
broker_start
data=$TEST_TMP/data-gw

mkdir -p "$fns"
cp -r "$example" "$fns/"
# name @ MODE of tests/native/hostile.c @ expected outcome
cases=("segv@segv@crash" "abort@abort@crash" "hang@hang@timeout")
for c in "${cases[@]}"; do
  IFS='@' read -r name mode outcome <<<"$c"
  mkdir -p "$fns/$name"
  cp "$native/hostile.so" "$fns/$name/handler.so"
  printf '{"name": "%s", "runtime": "native", "triggers": [{"type": "mqtt", "topic": "hostile/%s", "qos": 1}],
  "limits": {"timeout_ms": 300}, "retry": {"max": 1, "backoff_ms": 20, "dead_letter": "dlq/%s"},
  "env": {"MODE": "%s"}}\n' "$name" "$name" "$name" "$mode" >"$fns/$name/function.json"
done
mkdir -p "$fns/old-abi"
cp "$native/abi7.so" "$fns/old-abi/handler.so"
printf '{"name": "old-abi", "runtime": "native", "triggers": [{"type": "mqtt", "topic": "abi/in", "qos": 0}]}\n' \
  >"$fns/old-abi/function.json"
make_fn "$fns" good good/in 'return function(e, ctx) ctx.publish("out/good", e.payload, {qos = 1}) end'

# wisp validate loads a native handler as an executor would (in a child).
rc=0
"$WISP" validate "$fns/old-abi" 2>"$TEST_TMP/validate.err" || rc=$?
[ "$rc" -eq 1 ] && grep -q 'handler.so was built for wisp ABI 7; this wispd speaks 1' "$TEST_TMP/validate.err" ||
  fail "wisp validate did not refuse the ABI 7 handler: $(cat "$TEST_TMP/validate.err")"
"$WISP" validate "$example" >/dev/null || fail "wisp validate refused the native example"

wispd_start gw "$fns"
pid=$(wispd_pid gw)
log=$(wispd_log gw)
sub_start alerts 'alerts/#' -q 1
sub_start out 'out/#' -q 1
sub_start dlq 'dlq/#' -q 1
sub_start exdlq 'wisp/dlq/#' -q 1
sub_start leaked 'leak/#'
sleep 1 # the durable session subscribes

# The example: two readings above the threshold alert and count, one below
# does nothing, and a reading without a number is dead-lettered after its
# retries (1 + 2 attempts).
pub sensors/kitchen/humidity '{"humidity": 50.5}' -q 1
pub sensors/kitchen/humidity '{"humidity": 30}' -q 1
pub sensors/kitchen/humidity '46' -q 1
pub sensors/kitchen/humidity 'sensor fault' -q 1
sub_wait alerts 2
grep -q '^alerts/kitchen/humidity {"room":"kitchen","humidity":50.5,"threshold":45,"alerts":1,"at":"' \
  "$TEST_TMP/alerts.out" || fail "first alert wrong: $(cat "$TEST_TMP/alerts.out")"
grep -q '^alerts/kitchen/humidity {"room":"kitchen","humidity":46,"threshold":45,"alerts":2,' \
  "$TEST_TMP/alerts.out" || fail "second alert wrong: $(cat "$TEST_TMP/alerts.out")"
sub_wait exdlq 1 20
grep -q '"function":"native-threshold".*"error":"expected {\\"humidity\\": <number>} or a number on sensors/kitchen/humidity, got sensor fault".*"attempts":3' \
  "$TEST_TMP/exdlq.out" || fail "example dead letter wrong: $(cat "$TEST_TMP/exdlq.out")"
wait_for 10 "alert counter" bash -c "[ \"\$('$WISP' state native-threshold get alerts/kitchen --data '$data')\" = 2 ]" ||
  fail "alerts/kitchen is $("$WISP" state native-threshold get alerts/kitchen --data "$data"), expected 2"
grep -Eq 'mod=report fn=native-threshold .*outcome=ok .*memory_kb=[0-9]+ memory_limit_kb=1024 publishes=1' "$log" ||
  fail "no REPORT line for the example"

# Each hostile handler: one attack (2 attempts, then its dead-letter topic),
# then a good event on another function, then a good event on its own
# function (a fresh executor serves it).
n=0
for c in "${cases[@]}"; do
  IFS='@' read -r name mode outcome <<<"$c"
  pub "hostile/$name" attack -q 1
  n=$((n + 1))
  sub_wait dlq "$n" 20
  grep -q "^dlq/$name {.*\"outcome\":\"$outcome\".*\"attempts\":2" "$TEST_TMP/dlq.out" ||
    fail "$name: dead letter lacks outcome $outcome after 2 attempts: $(cat "$TEST_TMP/dlq.out")"
  [ "$(grep -c "mod=report fn=$name .*outcome=$outcome " "$log")" -eq 2 ] ||
    { grep "fn=$name" "$log" >&2; fail "$name: expected 2 attempts with outcome $outcome"; }
  kill -0 "$pid" || fail "wispd died after $name"
  pub good/in "after-$name" -q 1
  pub "hostile/$name" ok -q 1
done
sub_wait out 6 20
for c in "${cases[@]}"; do
  IFS='@' read -r name mode outcome <<<"$c"
  grep -qx "out/good after-$name" "$TEST_TMP/out.out" || fail "the good function did not run after $name"
  grep -qx "out/$name ok" "$TEST_TMP/out.out" || fail "$name did not serve its next event"
done
grep -q 'fn=hang.*executor killed after' "$log" || fail "hang: the executor was not killed"
grep -q 'executor exited unexpectedly' "$log" || fail "no crash was reported"
[ "$(sub_count leaked)" -eq 0 ] || fail "a crashed invocation's publish was sent: $(sub_lines leaked)"

# A library for another ABI is refused with both versions named; wispd goes on.
pub abi/in x
wait_for 10 "ABI refusal" grep -q 'old-abi.*handler.so was built for wisp ABI 7; this wispd speaks 1' "$log" ||
  { grep 'old-abi' "$log" >&2; fail "no clear ABI mismatch message"; }
kill -0 "$pid" || fail "wispd died"
wispd_stop gw

# wisp run: the same example locally, output on stdout, failures exit 1.
out=$("$WISP" run "$example" --event '{"humidity": 60}' --topic sensors/attic/humidity 2>"$TEST_TMP/run.err") ||
  { cat "$TEST_TMP/run.err" >&2; fail "wisp run failed"; }
grep -q '^alerts/attic/humidity qos=1 retain=false {"room":"attic","humidity":60,"threshold":45,"alerts":1,"at":"' <<<"$out" ||
  fail "wisp run output: $out"
grep -q 'level=warn mod=fn fn=native-threshold .*attic: humidity 60.0 is above 45.0 (alert 1)' "$TEST_TMP/run.err" ||
  fail "wisp run: ctx->log line missing"
out=$("$WISP" run "$example" --event '12' --topic sensors/attic/humidity 2>/dev/null)
[ -z "$out" ] || fail "a low reading published: $out"
rc=0
"$WISP" run "$example" --event 'nope' >/dev/null 2>"$TEST_TMP/run.err" || rc=$?
[ "$rc" -eq 1 ] || fail "wisp run of a failing event exited $rc"
grep -q 'outcome=error error="expected {' "$TEST_TMP/run.err" || fail "no error: $(cat "$TEST_TMP/run.err")"
rc=0
"$WISP" run "$fns/segv" --event x >/dev/null 2>"$TEST_TMP/run.err" || rc=$?
if [ "$rc" -ne 1 ] || ! grep -q 'outcome=crash' "$TEST_TMP/run.err"; then
  fail "wisp run of a crashing handler: exit $rc, $(cat "$TEST_TMP/run.err")"
fi
pass
