#!/usr/bin/env bash
# The device agent over Paho: wispd on an mqtts:// broker with a client
# certificate (mqtt.client paho; wispd_tls.sh covers the own client on TLS)
# is fleet-managed like on tcp://. The control plane is played
# by mosquitto_pub/sub over the plain listener of the same broker: status
# online (retained) and hello, a signed bundle deployed from the desired
# state serves and is reported active, metering batches arrive, a clean
# stop says offline, and after kill -9 the Last Will does.
source "$(dirname "$0")/../lib/wispd_test.sh"
pki=$TEST_TMP/pki
tls_make_certs "$pki"
broker_start_tls "$pki"
tls_uri=mqtts://127.0.0.1:$BROKER_TLS_PORT

dev=gw-tls
mkdir -p "$fns" "$TEST_TMP/trust" "$TEST_TMP/src/echo"
"$WISP" keygen "$TEST_TMP/publisher" >/dev/null || fail "keygen"
cp "$TEST_TMP/publisher.pub" "$TEST_TMP/trust/publisher.pem"
cat >"$TEST_TMP/wispd.json" <<EOF
{"broker": "$tls_uri",
 "mqtt": {"client": "paho",
          "tls": {"ca": "$pki/ca.crt", "cert": "$pki/client.crt", "key": "$pki/client.key"}},
 "cloud": {"enabled": true, "trust": "$TEST_TMP/trust", "labels": "site=lab",
           "token": "fleet-secret", "meter_interval_ms": 200}}
EOF

retained() { mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -t "$1" -C 1 -W 3 2>/dev/null || true; }
status_is() { retained "wisp/v1/$dev/status" | jq -e ".online == $1" >/dev/null; }
fn_is() { [ "$(retained "wisp/v1/$dev/reported" | jq -r ".functions.echo.$1")" = "$2" ]; }

sub_start meter "wisp/v1/$dev/meter"
sub_start hello "wisp/v1/$dev/hello"
WISPD_BROKER=$tls_uri wispd_start "$dev" "$fns" --config "$TEST_TMP/wispd.json"
log=$(wispd_log "$dev")
grep -q "connecting to $tls_uri" "$log" || fail "not connected through Paho over TLS"

# 1. Online (retained) and hello, over the TLS connection.
wait_for 10 "online" status_is true || fail "status is not online: $(retained "wisp/v1/$dev/status")"
sub_wait hello 1
sub_lines hello | cut -d' ' -f2- | jq -e '.device == "gw-tls" and .labels.site == "lab" and .token == "fleet-secret"' >/dev/null ||
  fail "hello: $(sub_lines hello)"

# 2. A signed bundle deployed from the desired state serves (a non-durable
# trigger, served by Paho).
dir=$TEST_TMP/src/echo
printf '{"name": "echo", "version": "1.0.0", "triggers": [{"type": "mqtt", "topic": "in/echo", "qos": 1, "durable": false}], "retry": {"max": 0}}\n' >"$dir/function.json"
printf 'return function(e, ctx)\n  ctx.publish("out/echo", "tls " .. e.payload)\nend\n' >"$dir/handler.lua"
wb=$TEST_TMP/echo.wb
"$WISP" bundle "$dir" -o "$wb" >/dev/null || fail "wisp bundle"
"$WISP" sign "$wb" --key "$TEST_TMP/publisher.key" >/dev/null || fail "wisp sign"
len=$(stat -c %s "$wb.sig")
{
  printf 'WISPSIGB'
  printf "\\x$(printf %02x $((len >> 24 & 255)))\\x$(printf %02x $((len >> 16 & 255)))\\x$(printf %02x $((len >> 8 & 255)))\\x$(printf %02x $((len & 255)))"
  cat "$wb.sig" "$wb"
} >"$wb.msg"
sha=$(sha256sum "$wb" | cut -c1-64)
mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -q 1 -r -t "wisp/v1/bundles/$sha" -f "$wb.msg"
pub "wisp/v1/$dev/desired" "{\"generation\": 1, \"rollout\": \"r-tls\", \"functions\": {\"echo\": {\"bundle\": \"$sha\", \"version\": \"1.0.0\"}}}" -q 1 -r
wait_for 20 "echo active" fn_is status active || { wispd_log_tails; fail "not active: $(retained "wisp/v1/$dev/reported")"; }
fn_is bundle "$sha" || fail "wrong bundle reported: $(retained "wisp/v1/$dev/reported")"
sub_start out out/echo
pub in/echo hello
sub_wait out 1
grep -qx 'out/echo tls hello' "$TEST_TMP/out.out" || fail "the managed function did not answer: $(cat "$TEST_TMP/out.out")"

# 3. Metering: the invocation arrives in a batch.
wait_for 15 "meter batch" bash -c "grep -v '^wisp-test-probe/' '$TEST_TMP/meter.raw' | cut -d' ' -f2- | jq -e 'select(.device == \"$dev\" and any(.records[]; .fn == \"echo\"))' >/dev/null" ||
  fail "no metering batch: $(cat "$TEST_TMP/meter.raw")"

# 4. A clean stop publishes offline before the DISCONNECT.
wispd_stop "$dev"
status_is false || fail "clean stop left the status online: $(retained "wisp/v1/$dev/status")"

# 5. Restarted, the managed version serves; kill -9 leaves the Last Will.
: >"$log"
WISPD_BROKER=$tls_uri wispd_start "$dev" "$fns" --config "$TEST_TMP/wispd.json"
wait_for 10 "online again" status_is true || fail "status not online after restart"
grep -q 'echo: loaded version 1.0.0' "$log" || fail "managed version not loaded at restart"
pid=$(wispd_pid "$dev")
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
wait_for 10 "offline by the will" status_is false ||
  fail "the Last Will did not mark the device offline: $(retained "wisp/v1/$dev/status")"
pass
