#!/usr/bin/env bash
# publish -> handler -> output through a real mosquitto and a real wispd:
# wildcards, two functions on one topic, a broken function rejected while
# the others run, the REPORT line, and the shipped examples end to end.
source "$(dirname "$0")/../lib/wispd_test.sh"
broker_start

make_fn "$fns" double 'in/+/n' 'return function(e, ctx) ctx.publish("out/double/" .. e.subject:match("in/(.-)/n"), {n = e.data.n * 2}) end'
make_fn "$fns" echo-all 'in/#' 'return function(e, ctx) ctx.publish("out/echo", e.payload) end'
make_fn "$fns" square 'in/+/n' 'return function(e, ctx) ctx.publish("out/square", tostring(e.data.n ^ 2)) end'
# Broken: a bad field, and a syntax error. Both rejected with path:field / path:line.
make_fn "$fns" broken-json 'in/x' 'return function() end' '"limits": {"timeout_ms": 0}'
make_fn "$fns" broken-lua 'in/x' 'return function(e, ctx) ctx.publish( end'

wispd_start gw "$fns"
log=$(wispd_log gw)
grep -q 'broken-json/function.json:limits.timeout_ms:' "$log" || fail "no path:field error for broken-json"
grep -q 'broken-lua/handler.lua:1:' "$log" || fail "no path:line error for broken-lua"
grep -q '3 function(s) loaded, 2 rejected' "$log" || fail "expected 3 loaded, 2 rejected"

sub_start out 'out/#'
pub in/a/n '{"n": 21}'
pub in/b/n '{"n": 4}'
pub in/deep/x/y 'not json'
sub_wait out 7
out=$(sub_lines out)
grep -qx 'out/double/a {"n":42}' <<<"$out" || fail "double a missing: $out"
grep -qx 'out/double/b {"n":8}' <<<"$out" || fail "double b missing"
grep -qx 'out/square 441.0' <<<"$out" || fail "square missing (two functions on one topic)"
grep -qx 'out/echo not json' <<<"$out" || fail "# wildcard did not match a deep topic"
[ "$(grep -c '^out/echo ' <<<"$out")" -eq 3 ] || fail "echo-all should see 3 messages"
grep -q 'mod=report fn=double .*outcome=ok .*billed_ms=1 ' "$log" || fail "no REPORT line"

# The shipped examples, as the quickstart runs them.
wispd_start ex "$WISP_BUILD_DIR/examples" --config "$WISP_SOURCE_DIR/examples/gateway.json"
sub_start ex 'alerts/#'
sub_start conv 'readings/#'
sub_start csv 'csv/#'
sub_start door 'door/#'
pub sensors/kitchen/temp '{"dev": "kitchen", "temp": 35.5}' -q 1
pub sensors/hall/temp '{"dev": "hall", "temp": 20}'
# alerts/# also carries the simulated boiler's alarms: wait for the kitchen's line itself.
sub_wait_line ex '^alerts/kitchen \{.*"temp":35.5'
sub_wait_line conv '"f":95.9'
sub_wait_line csv '^csv/hall .*,hall,temp,20$'
# The simulated doorbell (a GPIO edge every 3 s) toggles its LED line.
sub_wait_line door '^door/bell \{.*"ring":1' 10
grep -q 'msg="boiler-watch: loaded' "$(wispd_log ex)" || fail "boiler-watch did not load"
wispd_stop gw
wispd_stop ex
pass
