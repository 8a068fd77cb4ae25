#!/usr/bin/env bash
# Hostile handlers inside a real wispd: each one fails only its own
# invocation (with the right outcome), the next event is served normally,
# and wispd keeps running.
source "$(dirname "$0")/../lib/wispd_test.sh"
broker_start

limits='"limits": {"timeout_ms": 300, "memory_kb": 2048}'
# name @ expected outcome (a regex) @ the hostile body
cases=(
  "loop@timeout@while true do end"
  "pcall-loop@timeout@while true do pcall(function() while true do end end) end"
  "backtrack@timeout@local s = string.rep('a', 5000); s:find(string.rep('a-', 40) .. 'b')"
  "membomb@memory@local t = {}; while true do t[#t + 1] = string.rep('x', 65536) .. #t end"
  "hugerep@memory@local s = string.rep('x', 1e8)"
  "recursion@(error|memory)@local function f(n) return f(n + 1) + 1 end; f(1)"
  "flood@error@for i = 1, 100000 do ctx.publish('flood/x', 'y') end"
  "escape@error@os.execute('touch /tmp/wisp-escaped')"
)
for c in "${cases[@]}"; do
  IFS='@' read -r name outcome body <<<"$c"
  make_fn "$fns" "$name" "hostile/$name" "return function(event, ctx)
  if event.payload == 'ok' then ctx.publish('out/$name', 'ok'); return end
  $body
end" "$limits"
done

wispd_start gw "$fns"
pid=$(wispd_pid gw)
log=$(wispd_log gw)
sub_start out 'out/#'
sub_start leaked 'flood/#'
n=0
for c in "${cases[@]}"; do
  IFS='@' read -r name outcome body <<<"$c"
  pub "hostile/$name" 'attack'
  pub "hostile/$name" 'ok'
  n=$((n + 1))
done
sub_wait out "$n" 30
for c in "${cases[@]}"; do
  IFS='@' read -r name outcome body <<<"$c"
  grep -qx "out/$name ok" "$TEST_TMP/out.out" || fail "$name: the next event was not served"
  grep -Eq "mod=report fn=$name .*outcome=$outcome " "$log" ||
    { grep "fn=$name" "$log" >&2; fail "$name: expected outcome $outcome"; }
done
grep -q 'fn=backtrack.*executor killed after' "$log" || fail "backtrack: the executor was not killed"
grep -q 'fn=flood.*publish: more than 1000 messages' "$log" || fail "flood: no clear error"
[ ! -e /tmp/wisp-escaped ] || fail "os.execute escaped the sandbox"
kill -0 "$pid" || fail "wispd died"
# Nothing the failed invocations published may have leaked out.
[ "$(sub_count leaked)" -eq 0 ] || fail "a failed invocation's publishes were sent"
wispd_stop gw
pass
