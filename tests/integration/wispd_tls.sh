#!/usr/bin/env bash
# wispd over TLS with a client certificate against a mosquitto listener that
# requires one (CA and certificates made with openssl by the test); without
# the client certificate the broker refuses it and wispd says so.
source "$(dirname "$0")/../lib/wispd_test.sh"
pki=$TEST_TMP/pki
tls_make_certs "$pki"
broker_start_tls "$pki"

make_fn "$fns" tls-echo 'secure/in' 'return function(e, ctx) ctx.publish("secure/out", "got " .. e.payload) end'
# A QoS 1 trigger (durable by default) still fires on a TLS broker, through Paho, and wispd
# says once that its messages are acknowledged on receipt there.
FN_QOS=1 make_fn "$fns" tls-q1 'secure/q1' 'return function(e, ctx) ctx.publish("secure/out", "q1 " .. e.payload, {qos = 1}) end'

cat >"$TEST_TMP/wispd.json" <<JSON
{"broker": "$BROKER_TLS_URI",
 "mqtt": {"tls": {"ca": "$pki/ca.crt", "cert": "$pki/client.crt", "key": "$pki/client.key"}}}
JSON
WISPD_BROKER=$BROKER_TLS_URI wispd_start gw "$fns" --config "$TEST_TMP/wispd.json"
# The test's own clients use the plain listener of the same broker.
sub_start out 'secure/out'
pub secure/in hello
sub_wait out 1
grep -qx 'secure/out got hello' "$TEST_TMP/out.out" || fail "no output over TLS"
pub secure/q1 world -q 1
sub_wait out 2
grep -qx 'secure/out q1 world' "$TEST_TMP/out.out" || fail "no output of the QoS 1 trigger over TLS"
grep -q 'tls-q1: trigger on secure/q1: durable delivery (inbox before PUBACK) needs a tcp:// broker' \
  "$(wispd_log gw)" || fail "no warning about durable delivery on a TLS broker"
wispd_stop gw

# No client certificate: refused by the broker, reported, wispd keeps retrying.
log=$(wispd_log nocert)
"$WISPD" --functions "$fns" --broker "$BROKER_TLS_URI" --data "$TEST_TMP/data-nocert" \
  --tls-ca "$pki/ca.crt" >"$log" 2>&1 &
pid=$!
track_pid "$pid"
wait_for 15 "TLS failure reported" grep -q 'cannot connect to' "$log" || { cat "$log" >&2; fail "no failure logged"; }
kill -0 "$pid" || fail "wispd gave up instead of retrying"
kill -TERM "$pid"; wait "$pid" || fail "wispd did not exit 0 while disconnected"

# A CA file that does not exist is a clear configuration error at start.
rc=0
"$WISPD" --functions "$fns" --broker "$BROKER_TLS_URI" --data "$TEST_TMP/d3" \
  --tls-ca "$TEST_TMP/missing.crt" >"$TEST_TMP/missing.log" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "a missing CA file was accepted"
grep -q 'missing.crt' "$TEST_TMP/missing.log" || fail "the error does not name the file"
pass
