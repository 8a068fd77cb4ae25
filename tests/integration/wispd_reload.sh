#!/usr/bin/env bash
# SIGHUP reloads the functions folder without a restart: an added function
# starts serving, a changed one serves its new version while an event that
# started on the old version finishes there, and a removed one stops.
source "$(dirname "$0")/../lib/wispd_test.sh"
broker_start

slow='return function(e, ctx)
  if e.payload == "slow" then
    ctx.log.info("slow started")
    local t = os.clock(); while os.clock() - t < 1.5 do end
  end
  ctx.publish("out/a", "v1 " .. e.payload)
end'
make_fn "$fns" a 't/a' "$slow" '"limits": {"timeout_ms": 5000}'
make_fn "$fns" b 't/b' 'return function(e, ctx) ctx.publish("out/b", "v1 " .. e.payload) end'
wispd_start gw "$fns"
log=$(wispd_log gw)
sub_start out 'out/#'

pub t/a first
pub t/b first
sub_wait out 2
pub t/a slow
wait_for 10 "slow invocation started" grep -q 'slow started' "$log" || fail "slow never started"

# Change a, remove b, add c; then reload.
make_fn "$fns" a 't/a' 'return function(e, ctx) ctx.publish("out/a", "v2 " .. e.payload) end'
rm -rf "$fns/b"
make_fn "$fns" c 't/c' 'return function(e, ctx) ctx.publish("out/c", "v1 " .. e.payload) end'
kill -HUP "$(wispd_pid gw)"
wait_for 10 "reload" grep -q 'reloaded .*2 function(s) loaded' "$log" || fail "no reload"

pub t/a second
pub t/c first
pub t/b ignored
sub_wait out 5 15
out=$(sub_lines out)
grep -qx 'out/a v1 slow' <<<"$out" || fail "the in-flight event did not finish on v1: $out"
grep -qx 'out/a v2 second' <<<"$out" || fail "a was not replaced by v2"
grep -qx 'out/c v1 first' <<<"$out" || fail "c was not added"
# Let b's message have had every chance to be served, then check it was not.
pub t/c last
sub_wait out 6
! grep -q 'ignored' "$TEST_TMP/out.out" || fail "removed function b still served"
grep -q 'a: version .* replaces' "$log" || fail "no replacement log"
grep -q 'b: removed' "$log" || fail "no removal log"
wispd_stop gw
pass
