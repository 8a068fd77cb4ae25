#!/usr/bin/env bash
# The device agent against a real mosquitto, with the control plane played
# by mosquitto_pub: signed bundles are deployed from the desired state and
# serve; v2 replaces v1; a tampered and an unsigned bundle are refused while
# v2 serves; a failing v3 is rolled back on the device after its health
# check; the managed version survives a restart without the broker; the
# Last Will marks the device offline after kill -9; metering batches carry
# seqs 1..N with their chain, and an ack deletes them.
source "$(dirname "$0")/../lib/wispd_test.sh"
broker_start

dev=gw
mkdir -p "$fns" "$TEST_TMP/trust" "$TEST_TMP/src"
"$WISP" keygen "$TEST_TMP/publisher" >/dev/null || fail "keygen"
cp "$TEST_TMP/publisher.pub" "$TEST_TMP/trust/publisher.pem"
cat >"$TEST_TMP/wispd.json" <<EOF
{"cloud": {"enabled": true, "trust": "$TEST_TMP/trust", "labels": "site=lab,role=test",
           "token": "fleet-secret", "meter_interval_ms": 200, "meter_batch": 1000}}
EOF

# echo_fn VERSION [LUA STATEMENT]: a function folder answering on out/echo.
echo_fn() {
  local v=$1 body=${2:-} dir=$TEST_TMP/src/echo-$1
  mkdir -p "$dir"
  printf '{"name": "echo", "version": "%s", "triggers": [{"type": "mqtt", "topic": "in/echo"}], "retry": {"max": 0}}\n' "$v" >"$dir/function.json"
  printf 'return function(e, ctx)\n  %s\n  ctx.publish("out/echo", "%s " .. e.payload)\nend\n' "$body" "$v" >"$dir/handler.lua"
  echo "$dir"
}

# sigb FILE.wb [SIGFILE|-]: the WISPSIGB message for a bundle on stdout.
sigb() {
  local wb=$1 sig=${2:-$1.sig} len=0
  [ "$sig" != - ] && len=$(stat -c %s "$sig")
  printf 'WISPSIGB'
  printf "\\x$(printf %02x $((len >> 24 & 255)))\\x$(printf %02x $((len >> 16 & 255)))\\x$(printf %02x $((len >> 8 & 255)))\\x$(printf %02x $((len & 255)))"
  [ "$sig" != - ] && cat "$sig"
  cat "$wb"
}

# publish_bundle FILE.wb MSGFILE: retained on its topic; prints the sha.
publish_bundle() {
  local sha; sha=$(sha256sum "$1" | cut -c1-64)
  mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -q 1 -r -t "wisp/v1/bundles/$sha" -f "$2"
  echo "$sha"
}

# make_bundle VERSION [LUA]: bundle + signature + message; prints the sha.
make_bundle() {
  local v=$1 wb=$TEST_TMP/echo-$1.wb
  "$WISP" bundle "$(echo_fn "$@")" -o "$wb" >/dev/null || fail "wisp bundle $v"
  "$WISP" sign "$wb" --key "$TEST_TMP/publisher.key" >/dev/null || fail "wisp sign $v"
  sigb "$wb" >"$wb.msg"
  publish_bundle "$wb" "$wb.msg"
}

desired() { pub "wisp/v1/$dev/desired" "$1" -q 1 -r; }
retained() { mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -t "$1" -C 1 -W 3 2>/dev/null || true; }
reported() { retained "wisp/v1/$dev/reported"; }
# fn_is FIELD VALUE: the echo function's reported FIELD equals VALUE.
fn_is() { [ "$(reported | jq -r ".functions.echo.$1")" = "$2" ]; }
wait_fn() {
  wait_for 20 "echo.$1 == $2" fn_is "$1" "$2" || { wispd_log_tails; fail "reported echo.$1 is not $2: $(reported)"; }
}
# expect_echo TAG: an event is answered by TAG.
n_echo=0
expect_echo() {
  n_echo=$((n_echo + 1))
  sub_start "echo$n_echo" out/echo
  pub in/echo "e$n_echo"
  sub_wait "echo$n_echo" 1 10
  grep -qx "out/echo $1 e$n_echo" "$TEST_TMP/echo$n_echo.out" ||
    fail "expected \"$1 e$n_echo\", got: $(cat "$TEST_TMP/echo$n_echo.out")"
  kill "${SUB_PIDS[echo$n_echo]}" 2>/dev/null || true
}

sub_start meter "wisp/v1/$dev/meter"
sub_start hello "wisp/v1/$dev/hello"
wispd_start "$dev" "$fns" --config "$TEST_TMP/wispd.json"
log=$(wispd_log "$dev")

# 1. Online status, hello with labels and token.
retained "wisp/v1/$dev/status" | jq -e '.online == true and .wispd != null' >/dev/null ||
  fail "status is not online: $(retained "wisp/v1/$dev/status")"
sub_wait hello 1
sub_lines hello | cut -d' ' -f2- | jq -e '.device == "gw" and .labels.site == "lab" and .token == "fleet-secret"' >/dev/null ||
  fail "hello: $(sub_lines hello)"

# 2. v1 deployed from the desired state.
sha1=$(make_bundle 1.0.0)
desired "{\"generation\": 1, \"rollout\": \"r-1\", \"functions\": {\"echo\": {\"bundle\": \"$sha1\", \"version\": \"1.0.0\"}}}"
wait_fn bundle "$sha1"
wait_fn status active
[ "$(reported | jq -r .rollout)" = r-1 ] || fail "rollout not echoed: $(reported)"
expect_echo 1.0.0
[ -d "$TEST_TMP/data-$dev/deploy/bundles/$sha1" ] || fail "bundle not unpacked"

# 3. v2 replaces v1.
sha2=$(make_bundle 2.0.0)
desired "{\"generation\": 2, \"functions\": {\"echo\": {\"bundle\": \"$sha2\"}}}"
wait_fn bundle "$sha2"
wait_fn previous "$sha1"
expect_echo 2.0.0

# 4. A lower generation is ignored.
desired "{\"generation\": 1, \"functions\": {}}"
wait_for 10 "old generation ignored" grep -q 'generation 1 ignored' "$log" || fail "generation 1 was not ignored"
expect_echo 2.0.0

# 5. Hostile desired states are refused naming the field; v2 serves.
desired '{"generation": 9, "functions": {"echo": {"bundle": "not-a-sha"}}}'
wait_for 10 "bad bundle field refused" grep -q 'functions.echo.bundle' "$log" || fail "bad desired not refused"
desired '{"functions": {}}'
wait_for 10 "missing generation refused" grep -q 'refused: generation: required' "$log" || fail "no generation refusal"
expect_echo 2.0.0

# 6. A tampered bundle (signature does not verify) is refused.
"$WISP" bundle "$(echo_fn 3.0.0)" -o "$TEST_TMP/t.wb" >/dev/null
"$WISP" sign "$TEST_TMP/t.wb" --key "$TEST_TMP/publisher.key" >/dev/null
sed 's/3\.0\.0/6.6.6/' "$TEST_TMP/t.wb" >"$TEST_TMP/tampered.wb"
cmp -s "$TEST_TMP/t.wb" "$TEST_TMP/tampered.wb" && fail "tampering changed nothing"
sigb "$TEST_TMP/tampered.wb" "$TEST_TMP/t.wb.sig" >"$TEST_TMP/tampered.msg"
shat=$(publish_bundle "$TEST_TMP/tampered.wb" "$TEST_TMP/tampered.msg")
desired "{\"generation\": 3, \"functions\": {\"echo\": {\"bundle\": \"$shat\"}}}"
wait_fn status refused
reported | jq -e '.functions.echo.error | test("signature")' >/dev/null || fail "no signature reason: $(reported)"
fn_is bundle "$sha2" || fail "v2 no longer runs: $(reported)"
expect_echo 2.0.0
# ... and one published under a topic naming another hash.
bad=$(printf '%064d' 7 | tr 0 a)
cp "$TEST_TMP/echo-2.0.0.wb.msg" "$TEST_TMP/wrong.msg"
mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -q 1 -r -t "wisp/v1/bundles/$bad" -f "$TEST_TMP/wrong.msg"
desired "{\"generation\": 4, \"functions\": {\"echo\": {\"bundle\": \"$bad\"}}}"
wait_for 10 "hash mismatch refused" bash -c "jq -e '.functions.echo.error | test(\"sha256 mismatch\")' <<<\"\$(mosquitto_sub -h 127.0.0.1 -p $BROKER_PORT -t wisp/v1/$dev/reported -C 1 -W 3)\" >/dev/null" ||
  fail "hash mismatch not refused: $(reported)"

# 7. An unsigned bundle is refused (cloud.dev_unsigned is off).
"$WISP" bundle "$(echo_fn 4.0.0)" -o "$TEST_TMP/u.wb" >/dev/null
sigb "$TEST_TMP/u.wb" - >"$TEST_TMP/u.msg"
shau=$(publish_bundle "$TEST_TMP/u.wb" "$TEST_TMP/u.msg")
desired "{\"generation\": 5, \"functions\": {\"echo\": {\"bundle\": \"$shau\"}}}"
wait_for 20 "unsigned refused" bash -c "jq -e '.functions.echo.error | test(\"unsigned\")' <<<\"\$(mosquitto_sub -h 127.0.0.1 -p $BROKER_PORT -t wisp/v1/$dev/reported -C 1 -W 3)\" >/dev/null" ||
  fail "unsigned bundle not refused: $(reported)"
fn_is status refused || fail "unsigned: $(reported)"
expect_echo 2.0.0

# 8. A failing v3 is rolled back by the health check; v2 serves again.
sha3=$(make_bundle 3.0.0 'error("broken build")')
desired "{\"generation\": 6, \"functions\": {\"echo\": {\"bundle\": \"$sha3\"}}, \"health\": {\"min_invocations\": 4, \"max_error_rate\": 0.5}}"
wait_fn bundle "$sha3"
for i in 1 2 3; do pub in/echo "fail$i"; done
wait_fn status rolled_back
fn_is bundle "$sha2" || fail "not back on v2: $(reported)"
reported | jq -e '.functions.echo.error | test("3 of 3 invocations failed \\(error: .*broken build")' >/dev/null ||
  fail "rollback reason: $(reported)"
expect_echo 2.0.0
grep -q '"bad":\["'"$sha3"'"\]' "$TEST_TMP/data-$dev/deploy/active.json" || fail "v3 not marked bad: $(cat "$TEST_TMP/data-$dev/deploy/active.json")"
# The bad bundle is not activated again by the same desired state.
desired "{\"generation\": 7, \"functions\": {\"echo\": {\"bundle\": \"$sha3\"}}}"
wait_for 10 "generation 7" bash -c "[ \"\$(mosquitto_sub -h 127.0.0.1 -p $BROKER_PORT -t wisp/v1/$dev/reported -C 1 -W 3 | jq .generation)\" = 7 ]" || fail "generation 7 not applied"
fn_is status rolled_back || fail "bad bundle reactivated: $(reported)"
expect_echo 2.0.0

# 9. Metering: every invocation so far is in the batches, seqs 1..N with
# their chain; an ack deletes them.
total=$(grep -c 'mod=report' "$log" || true)
[ "$total" -ge 10 ] || fail "only $total invocations reported"
wait_for 15 "seq $total metered" bash -c "grep -v '^wisp-test-probe/' '$TEST_TMP/meter.raw' | cut -d' ' -f2- | jq -r '.records[].seq' | grep -qx $total" ||
  fail "seq $total never sent; got: $(grep -v '^wisp-test-probe/' "$TEST_TMP/meter.raw" | cut -d' ' -f2- | jq -c '[.records[].seq]')"
seqs=$(grep -v '^wisp-test-probe/' "$TEST_TMP/meter.raw" | cut -d' ' -f2- | jq -r '.records[].seq' | sort -n | uniq)
[ "$seqs" = "$(seq 1 "$total")" ] || fail "seqs are not 1..$total: $(echo $seqs)"
grep -v '^wisp-test-probe/' "$TEST_TMP/meter.raw" | cut -d' ' -f2- |
  jq -e '.device == "gw" and all(.records[]; (.hash | length) == 64 and (.prev | length) == 64 and .fn == "echo")' >/dev/null ||
  fail "records lack their chain: $(tail -1 "$TEST_TMP/meter.raw")"
[ "$(reported | jq .meter.pending)" -ge 1 ] || fail "nothing pending before the ack: $(reported)"
pub "wisp/v1/$dev/meter/ack" "{\"upto\": $((total + 1000))}" -q 1
wait_for 10 "ack beyond refused" grep -q 'beyond the last record sent' "$log" || fail "ack beyond what was sent was taken"
pub "wisp/v1/$dev/meter/ack" "{\"upto\": $total}" -q 1
wait_for 15 "meter pending 0" bash -c "mosquitto_sub -h 127.0.0.1 -p $BROKER_PORT -t wisp/v1/$dev/reported -C 1 -W 3 | jq -e '.meter.pending == 0 and .meter.acked == $total' >/dev/null" ||
  fail "ack did not delete the records: $(reported)"

# 10. Restart without the broker: the managed v2 runs from active.json.
wispd_stop "$dev"
[ "$(retained "wisp/v1/$dev/status" | jq .online)" = false ] || fail "clean stop left the status online"
broker_stop
"$WISPD" --functions "$fns" --broker "$BROKER_URI" --data "$TEST_TMP/data-$dev" --device "$dev" \
  --config "$TEST_TMP/wispd.json" >>"$log.2" 2>&1 &
pid=$!
track_pid "$pid"
wait_for 10 "v2 loaded offline" grep -q 'echo: loaded version 2.0.0' "$log.2" || { cat "$log.2" >&2; fail "v2 not loaded without the broker"; }
broker_restart
wait_for 20 "reconnected" grep -q 'msg="ready' "$log.2" || fail "not ready after the broker came back"
expect_echo 2.0.0

# 11. Last Will: kill -9 leaves the status offline.
wait_for 10 "online again" bash -c "mosquitto_sub -h 127.0.0.1 -p $BROKER_PORT -t wisp/v1/$dev/status -C 1 -W 3 | jq -e '.online == true' >/dev/null" ||
  fail "status not online after restart"
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
wait_for 10 "offline by the will" bash -c "mosquitto_sub -h 127.0.0.1 -p $BROKER_PORT -t wisp/v1/$dev/status -C 1 -W 3 | jq -e '.online == false' >/dev/null" ||
  fail "the Last Will did not mark the device offline: $(retained "wisp/v1/$dev/status")"
pass
