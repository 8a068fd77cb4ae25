#!/usr/bin/env bash
# The fleet end to end: a real mosquitto, a real wisp-cloud and three real
# wispd devices (plus one outside the selector). Deploy by label with a
# canary; a failing version halts and rolls every device back by itself; an
# unsigned bundle, one signed by an untrusted key and a tampered one are
# refused while the old version serves; a device offline during a
# deployment converges when it returns; metering totals equal the exact
# invocation counts after an offline period and a wisp-cloud restart; the
# CLI reports an unreachable control plane and API errors clearly.
source "$(dirname "$0")/../lib/wispd_test.sh"
source "$(dirname "$0")/../lib/cloud.sh"
BROKER_PERSIST=1 broker_start
printf 'fleet-secret\n' >"$TEST_TMP/fleet.token"
cloud_start --fleet-token-file "$TEST_TMP/fleet.token"
key=$(publisher_key)

# greeter VERSION [LUA BODY]: a function folder whose handler answers on
# out/greet/<device> with its version.
greeter() {
  local v=$1 body=${2:-} dir=$TEST_TMP/src/greeter-$1
  mkdir -p "$dir"
  printf '{"name": "greeter", "version": "%s", "triggers": [{"type": "mqtt", "topic": "in/greet"}], "retry": {"max": 0}}\n' "$v" >"$dir/function.json"
  printf 'return function(e, ctx)\n  %s\n  ctx.publish("out/greet/" .. e.source:match("wisp://([^/]+)/"), "%s")\nend\n' "$body" "$v" >"$dir/handler.lua"
  echo "$dir"
}

for d in gw-1 gw-2 gw-3; do device_start "$d" "site=plant-3,role=door" --cloud-token fleet-secret; done
device_start other "site=elsewhere" --cloud-token fleet-secret
# A gateway set up by first-boot provisioning registers with its labels and fleet token.
mkdir -p "$TEST_TMP/prov/etc" "$TEST_TMP/prov/state"
jq -n --arg b "$BROKER_URI" --rawfile k "$TEST_TMP/publisher.pub" \
  '{broker: $b, fleet_token: "fleet-secret", labels: {site: "plant-9"}, device_id: "prov-1", trusted_keys: [$k]}' \
  >"$TEST_TMP/prov/wisp-provision.json"
"$WISP_PROVISION" --input "$TEST_TMP/prov/wisp-provision.json" --etc "$TEST_TMP/prov/etc" \
  --state "$TEST_TMP/prov/state" >"$TEST_TMP/provision.log" 2>&1 || fail "provisioning: $(cat "$TEST_TMP/provision.log")"
jq -e '.cloud.enabled and .cloud.identity and .cloud.trust' "$TEST_TMP/prov/etc/wispd.json" >/dev/null ||
  fail "provisioning did not enable cloud sync: $(cat "$TEST_TMP/prov/etc/wispd.json")"
wispd_start prov-1 "$TEST_TMP/prov/state/functions" --config "$TEST_TMP/prov/etc/wispd.json"
# A gateway with the wrong fleet token is not let in.
device_start intruder "site=plant-3" --cloud-token not-the-token
wait_for 15 "5 devices registered" api_ok /v1/devices '.devices | length == 5' ||
  fail "devices did not register: $(api GET /v1/devices)"
api_ok /v1/devices/prov-1 '.labels.site == "plant-9"' || fail "prov-1: $(api GET /v1/devices/prov-1)"
sleep 1
api_ok /v1/devices '[.devices[].device] | index("intruder") == null' || fail "a wrong fleet token registered"
grep -q 'intruder' "$(cloud_log)" || fail "the refused hello is not logged"
wispd_stop intruder
# An idle device with cloud sync sleeps: its loop has no due work to spin on.
cpu_ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }
t0=$(cpu_ticks "$(wispd_pid gw-1)"); sleep 2; t1=$(cpu_ticks "$(wispd_pid gw-1)")
[ $((t1 - t0)) -lt 25 ] || fail "idle gw-1 used $((t1 - t0)) CPU ticks in 2 s"
"$WISP" devices --label site=plant-3 >"$TEST_TMP/devices.txt"
[ "$(grep -c '^gw-' "$TEST_TMP/devices.txt")" -eq 3 ] || fail "wisp devices --label: $(cat "$TEST_TMP/devices.txt")"
grep -q '^other' "$TEST_TMP/devices.txt" && fail "--label did not filter"

# Every device of the selector answers an event with VERSION.
expect_version() {
  local v=$1 n=greet-${1// /_}-$2
  sub_start "$n" 'out/greet/#'
  pub in/greet go
  sub_wait "$n" 3 10
  local lines; lines=$(sub_lines "$n")
  for d in gw-1 gw-2 gw-3; do
    grep -qx "out/greet/$d $v" <<<"$lines" || fail "$d did not answer with $v: $lines"
  done
  grep -q '^out/greet/other' <<<"$lines" && fail "a device outside the selector runs greeter"
  kill "${SUB_PIDS[$n]}" 2>/dev/null || true
}

# 1. Deploy by label, canary 1 of 3 then all.
"$WISP" deploy "$(greeter 1.0.0)" --to site=plant-3 --key "$key" --canary 33% --bake 1s --wait 60 \
  >"$TEST_TMP/deploy1.txt" || fail "deploy 1 failed: $(cat "$TEST_TMP/deploy1.txt")"
r1=$(api GET /v1/rollouts | jq -r '.rollouts[0].id')
api GET "/v1/rollouts/$r1" >"$TEST_TMP/r1.json"
[ "$(jq -r .state "$TEST_TMP/r1.json")" = done ] || fail "rollout 1 not done: $(cat "$TEST_TMP/r1.json")"
[ "$(jq '[.devices[] | select(.phase == "canary")] | length' "$TEST_TMP/r1.json")" -eq 1 ] ||
  fail "expected one canary: $(cat "$TEST_TMP/r1.json")"
expect_version 1.0.0 a

# 2. A version whose handler fails: the canary rolls back by itself, the
# rollout halts and every device is on 1.0.0 again.
"$WISP" deploy "$(greeter 2.0.0 'error("broken build")')" --to site=plant-3 --key "$key" \
  --canary 33% --bake 60s --health-min 3 >"$TEST_TMP/deploy2.txt" || fail "deploy 2: $(cat "$TEST_TMP/deploy2.txt")"
r2=$(api GET /v1/rollouts | jq -r '.rollouts[0].id')
wait_for 20 "canary runs 2.0.0" api_ok "/v1/rollouts/$r2" '[.devices[] | select(.state == "active")] | length == 1' ||
  fail "canary did not activate: $(api GET "/v1/rollouts/$r2")"
for i in 1 2 3 4 5 6; do pub in/greet go; sleep 0.2; done
wait_for 15 "rollout 2 rolled back" api_ok "/v1/rollouts/$r2" '.state == "rolled_back"' ||
  fail "rollout 2 did not roll back: $(api GET "/v1/rollouts/$r2")"
"$WISP" rollout status "$r2" >"$TEST_TMP/r2.txt"
grep -q 'rolled_back' "$TEST_TMP/r2.txt" || fail "wisp rollout status: $(cat "$TEST_TMP/r2.txt")"
for d in gw-1 gw-2 gw-3; do
  wait_for 10 "$d back on 1.0.0" api_ok "/v1/devices/$d" '.functions.greeter.version == "1.0.0"' ||
    fail "$d not back on 1.0.0: $(reported "$d")"
done
expect_version 1.0.0 b

# 3. Refused bundles: unsigned, signed by a key the devices do not trust,
# and tampered on the broker. 1.0.0 keeps serving through each.
"$WISP" deploy "$(greeter 3.0.0)" --to site=plant-3 --dev-unsigned --canary 33% --bake 60s \
  >/dev/null 2>"$TEST_TMP/unsigned.err" || fail "unsigned upload: $(cat "$TEST_TMP/unsigned.err")"
grep -q WARNING "$TEST_TMP/unsigned.err" || fail "--dev-unsigned did not warn"
r3=$(api GET /v1/rollouts | jq -r '.rollouts[0].id')
wait_for 15 "unsigned refused" api_ok "/v1/rollouts/$r3" '.state == "rolled_back"' ||
  fail "unsigned bundle not refused: $(api GET "/v1/rollouts/$r3")"
grep -q 'refused' <<<"$(api GET "/v1/rollouts/$r3" | jq -r .halted_reason)" || fail "no refusal reason: $(api GET "/v1/rollouts/$r3")"
"$WISP" keygen "$TEST_TMP/stranger" >/dev/null
"$WISP" deploy "$(greeter 4.0.0)" --to site=plant-3 --key "$TEST_TMP/stranger.key" --canary 33% --bake 60s >/dev/null
r4=$(api GET /v1/rollouts | jq -r '.rollouts[0].id')
wait_for 15 "untrusted signature refused" api_ok "/v1/rollouts/$r4" '.state == "rolled_back"' ||
  fail "untrusted bundle not refused: $(api GET "/v1/rollouts/$r4")"
# Tampered: upload a good bundle, then replace the retained bundle message
# on the broker with one whose bytes differ, then roll it out.
"$WISP" bundle "$(greeter 5.0.0)" -o "$TEST_TMP/g5.wb" >/dev/null
"$WISP" sign "$TEST_TMP/g5.wb" --key "$key" >/dev/null
bundle_message "$TEST_TMP/g5.wb" >"$TEST_TMP/g5.msg"
sha=$(api POST /v1/bundles -H 'Content-Type: application/octet-stream' --data-binary "@$TEST_TMP/g5.msg" | jq -r .sha256)
sed 's/5\.0\.0/6.6.6/' "$TEST_TMP/g5.msg" >"$TEST_TMP/g5-tampered.msg"
cmp -s "$TEST_TMP/g5.msg" "$TEST_TMP/g5-tampered.msg" && fail "tampering changed nothing"
# wisp-cloud publishes the genuine message after answering: replace it only once it is there.
retained_is() {
  mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -t "wisp/v1/bundles/$sha" -C 1 -W 2 >"$TEST_TMP/retained.msg" 2>/dev/null &&
    head -c -1 "$TEST_TMP/retained.msg" | cmp -s - "$1"
}
wait_for 10 "genuine bundle retained" retained_is "$TEST_TMP/g5.msg" || fail "wisp-cloud did not publish the bundle"
mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -q 1 -r -t "wisp/v1/bundles/$sha" -f "$TEST_TMP/g5-tampered.msg"
wait_for 10 "tampered bundle retained" retained_is "$TEST_TMP/g5-tampered.msg" || fail "the tampered bundle is not retained"
r5=$(api POST /v1/rollouts -H 'Content-Type: application/json' \
  -d "{\"bundle\": \"$sha\", \"selector\": \"site=plant-3\", \"canary_percent\": 33, \"bake_s\": 60}" | jq -r .id)
wait_for 15 "tampered bundle refused" api_ok "/v1/rollouts/$r5" '.state == "rolled_back"' ||
  fail "tampered bundle not refused: $(api GET "/v1/rollouts/$r5")"
grep -q 'refused' "$(wispd_log gw-1)" "$(wispd_log gw-2)" "$(wispd_log gw-3)" || fail "no refusal in the device logs"
expect_version 1.0.0 c

# 4. A device offline during a deployment converges when it returns.
wispd_stop gw-3
"$WISP" deploy "$(greeter 7.0.0)" --to site=plant-3 --key "$key" >/dev/null
r7=$(api GET /v1/rollouts | jq -r '.rollouts[0].id')
wait_for 15 "2 of 3 on 7.0.0" api_ok "/v1/rollouts/$r7" '[.devices[] | select(.state == "active")] | length == 2' ||
  fail "online devices did not take 7.0.0: $(api GET "/v1/rollouts/$r7")"
[ "$(api GET "/v1/rollouts/$r7" | jq -r .state)" != done ] || fail "rollout done with a device offline"
wispd_start gw-3 "$TEST_TMP/local-gw-3" --cloud --cloud-trust "$TEST_TMP/trust" --cloud-labels "site=plant-3,role=door" \
  --cloud-token fleet-secret
wait_for 15 "rollout 7 done" api_ok "/v1/rollouts/$r7" '.state == "done"' ||
  fail "gw-3 did not converge: $(api GET "/v1/rollouts/$r7")"
expect_version 7.0.0 d
# A rebuilt function that repeats its version string still replaces the running code.
rebuilt=$(greeter 7.0.0)
sed -i 's/"7.0.0")/"7.0.0 rebuilt")/' "$rebuilt/handler.lua"
"$WISP" deploy "$rebuilt" --to site=plant-3 --key "$key" --wait 30 >/dev/null || fail "deploy of the rebuilt 7.0.0"
expect_version "7.0.0 rebuilt" e
# Rolled back by hand from the CLI: every device gets the previous bundle again.
r8=$(api GET /v1/rollouts | jq -r '.rollouts[0].id')
"$WISP" rollout rollback "$r8" >/dev/null || fail "wisp rollout rollback $r8"
wait_for 10 "rollout $r8 rolled back" api_ok "/v1/rollouts/$r8" '.state == "rolled_back"' ||
  fail "rollback: $(api GET "/v1/rollouts/$r8")"
prev=$(api GET "/v1/rollouts/$r8" | jq -r '.devices[0].previous')
for d in gw-1 gw-2 gw-3; do
  wait_for 10 "$d back on 7.0.0" api_ok "/v1/devices/$d" \
    ".functions.greeter.bundle == \"$prev\" and .functions.greeter.status == \"active\"" ||
    fail "$d: $(reported "$d")"
done
expect_version 7.0.0 f

# 5. Metering. A device offline: the broker away for 3 s while a timer function on gw-1
# keeps running; then wisp-cloud down while devices keep invoking, then restarted.
mkdir -p "$TEST_TMP/local-gw-1/tick"
echo '{"name": "tick", "triggers": [{"type": "timer", "every": "100ms"}]}' >"$TEST_TMP/local-gw-1/tick/function.json"
echo 'return function(e, ctx) end' >"$TEST_TMP/local-gw-1/tick/handler.lua"
kill -HUP "$(wispd_pid gw-1)"
sleep 1
broker_stop
sleep 3
broker_restart
rm -r "$TEST_TMP/local-gw-1/tick"
kill -HUP "$(wispd_pid gw-1)"
wait_for 10 "tick removed" grep -q 'tick: removed' "$(wispd_log gw-1)" || fail "tick was not removed"
[ "$(grep -c 'mod=report fn=tick' "$(wispd_log gw-1)")" -ge 30 ] || fail "the timer did not run through the outage"
cloud_stop
for i in $(seq 1 20); do pub in/greet "x$i"; done
sleep 1
cloud_start --fleet-token-file "$TEST_TMP/fleet.token"
invocations() { cat "$TEST_TMP"/wispd-*.log | grep -c 'mod=report' || true; }
want=$(invocations)
wait_for 20 "metering caught up" api_ok '/v1/meter?by=device&period=day' "[.rows[].invocations] | add == $want" ||
  fail "metering: $(api GET '/v1/meter?by=device&period=day') vs $want REPORT lines"
"$WISP" meter --by function --csv >"$TEST_TMP/meter.csv"
head -1 "$TEST_TMP/meter.csv" | grep -q 'invocations' || fail "CSV has no header: $(head -2 "$TEST_TMP/meter.csv")"
got=$(awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "invocations") c = i; next } { s += $c } END { print s }' "$TEST_TMP/meter.csv")
[ "$got" -eq "$want" ] || fail "CSV totals $got, expected $want"
# Restarting wisp-cloud again double-counts nothing (devices resend nothing acked).
cloud_stop
cloud_start --fleet-token-file "$TEST_TMP/fleet.token"
sleep 2
[ "$(api GET '/v1/meter?by=device&period=day' | jq '[.rows[].invocations] | add')" -eq "$want" ] ||
  fail "totals changed after a restart"

# 6. Errors: unreachable control plane, bad token, bad requests.
out=$("$WISP" devices --cloud http://127.0.0.1:1 2>&1) && fail "unreachable control plane succeeded"
grep -q 'cannot reach the control plane at http://127.0.0.1:1' <<<"$out" || fail "unclear unreachable error: $out"
out=$("$WISP" devices --token wrong 2>&1) && fail "a wrong token was accepted"
grep -q '401' <<<"$out" || fail "wrong token: $out"
code=$(curl -s -o "$TEST_TMP/bad.json" -w '%{http_code}' -X POST -H "Authorization: Bearer $CLOUD_TOKEN" \
  -H 'Content-Type: application/json' -d '{"bundle": 42}' "$CLOUD_URL/v1/rollouts")
[ "$code" = 400 ] && grep -q bundle "$TEST_TMP/bad.json" || fail "bad rollout body: $code $(cat "$TEST_TMP/bad.json")"
out=$("$WISP" rollout halt r-does-not-exist 2>&1) && fail "halting an unknown rollout succeeded"
grep -q '404' <<<"$out" || fail "unknown rollout: $out"
pass
