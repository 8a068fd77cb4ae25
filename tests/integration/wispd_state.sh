#!/usr/bin/env bash
# ctx.state through wispd: concurrent increments are never lost, a failing
# handler's writes are rolled back, retries end in the dead-letter store and
# topic, and `wisp dlq replay` runs a dead letter again; `wisp state` shows
# what is stored.
source "$(dirname "$0")/../lib/wispd_test.sh"
broker_start "max_queued_messages 0"
data=$TEST_TMP/data-gw

# Two invocations at a time, each incrementing the same key.
FN_QOS=1 make_fn "$fns" counter 'count/#' 'return function(e, ctx)
  ctx.state.incr("hits")
  ctx.state.put("last", e.data)
end' '"limits": {"concurrency": 4}'

# Writes, then fails when told to: the writes must not stay. The env value
# decides whether "flaky" events fail, so a reload can fix them for replay.
FN_QOS=1 make_fn "$fns" strict 'strict/#' 'return function(e, ctx)
  ctx.state.put("touched/" .. e.payload, true)
  if e.payload == "bad" and ctx.env.MODE ~= "fixed" then error("refusing bad input") end
  ctx.state.incr("good")
  ctx.publish("out/strict", e.payload, {qos = 1})
end' '"retry": {"max": 2, "backoff_ms": 20, "dead_letter": "dlq/strict"}, "env": {"MODE": "strict"}'

wispd_start gw "$fns"
sub_start out 'out/#' -q 1
sub_start dlq 'dlq/#' -q 1
sleep 1 # the durable session subscribes

N=400
for i in $(seq 1 "$N"); do echo "{\"i\": $i}"; done |
  mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -l -q 1 -t count/a
wait_for 60 "hits = $N" bash -c "[ \"\$('$WISP' state counter get hits --data '$data')\" = $N ]" ||
  fail "lost updates: hits is $("$WISP" state counter get hits --data "$data"), expected $N"
"$WISP" state counter --data "$data" | grep -q '^last	{"i":' || fail "wisp state does not list the last value"

pub strict/a good -q 1
pub strict/a bad -q 1
sub_wait out 1
sub_wait dlq 1 20
grep -q '"error":"[^"]*refusing bad input' "$TEST_TMP/dlq.raw" || fail "dead-letter message lacks the error"
[ "$("$WISP" state strict get good --data "$data")" = 1 ] || fail "good count wrong"
"$WISP" state strict get touched/bad --data "$data" 2>/dev/null && fail "a failed invocation's write stayed"
"$WISP" state strict get touched/good --data "$data" >/dev/null || fail "a successful write is missing"
log=$(wispd_log gw)
[ "$(grep -c 'mod=report fn=strict .*outcome=error' "$log")" -eq 3 ] || fail "expected 3 failed attempts (1 + 2 retries)"
"$WISP" dlq list --data "$data" >"$TEST_TMP/dlq.list"
grep -q 'strict.*refusing bad input' "$TEST_TMP/dlq.list" || { cat "$TEST_TMP/dlq.list" >&2; fail "wisp dlq list does not show it"; }
id=$(awk '{print $1; exit}' "$TEST_TMP/dlq.list")

# Fix the function (reload), then replay: it runs again and succeeds.
sed -i 's/"MODE": "strict"/"MODE": "fixed"/' "$fns/strict/function.json"
kill -HUP "$(wispd_pid gw)"
wait_for 10 "reload" grep -q 'reloaded' "$log" || fail "no reload"
"$WISP" dlq replay "$id" --data "$data" || fail "replay failed"
sub_wait out 2 20
[ "$("$WISP" state strict get good --data "$data")" = 2 ] || fail "the replayed event did not run"
"$WISP" dlq list --data "$data" 2>&1 | grep -q '^0 dead letter' || fail "the replayed dead letter is still listed"
"$WISP" dlq purge --data "$data" >/dev/null 2>&1 || fail "purge failed"

"$WISP" backup "$TEST_TMP/backup" --data "$data" || fail "backup failed"
mkdir -p "$TEST_TMP/restored/store" && cp "$TEST_TMP/backup/data.mdb" "$TEST_TMP/restored/store/"
[ "$("$WISP" state counter get hits --data "$TEST_TMP/restored")" = "$N" ] || fail "the backup lacks the state"
wispd_stop gw
pass
