#!/usr/bin/env bash
# wispd over TLS with a client certificate against a mosquitto listener that
# requires one (CA and certificates made with openssl by the test), through
# wispd's own MQTT client (mbedTLS): QoS 1 triggers keep durable delivery
# (inbox before PUBACK), no warning about acknowledging on receipt. Failures
# are logged with their reason and retried: no client certificate (the
# broker refuses it), a CA that did not sign the broker's certificate (the
# verification failure named; with tls.insecure it connects). A CA file that
# does not exist is a configuration error at start.
source "$(dirname "$0")/../lib/wispd_test.sh"
pki=$TEST_TMP/pki
tls_make_certs "$pki"
broker_start_tls "$pki"
N=25

make_fn "$fns" tls-echo 'secure/in' 'return function(e, ctx) ctx.publish("secure/out", "got " .. e.payload) end'
# A QoS 1 trigger (durable by default): every message through the inbox, counted once.
FN_QOS=1 make_fn "$fns" tls-q1 'secure/q1' 'return function(e, ctx)
  ctx.state.incr("n")
  ctx.publish("secure/out", "q1 " .. e.payload, {qos = 1})
end'

cat >"$TEST_TMP/wispd.json" <<JSON
{"broker": "$BROKER_TLS_URI",
 "mqtt": {"tls": {"ca": "$pki/ca.crt", "cert": "$pki/client.crt", "key": "$pki/client.key"}}}
JSON
WISPD_BROKER=$BROKER_TLS_URI wispd_start gw "$fns" --config "$TEST_TMP/wispd.json"
log=$(wispd_log gw)
# The own client, verifying the broker's certificate for its IP address (subjectAltName).
wait_for 15 "own client connected over TLS" grep -q "connected to 127.0.0.1:$BROKER_TLS_PORT as" "$log" ||
  { cat "$log" >&2; fail "the own client did not connect over TLS"; }
# The test's own clients use the plain listener of the same broker.
sub_start out 'secure/out'
sleep 1 # the durable subscription
pub secure/in hello
sub_wait out 1
grep -qx 'secure/out got hello' "$TEST_TMP/out.out" || fail "no output over TLS"
for i in $(seq 1 "$N"); do pub secure/q1 "m$i" -q 1; done
sub_wait out $((N + 1))
for i in $(seq 1 "$N"); do
  grep -qx "secure/out q1 m$i" "$TEST_TMP/out.out" || fail "no output of the QoS 1 trigger for m$i over TLS"
done
count() { "$WISP" state tls-q1 get n --data "$TEST_TMP/data-gw" 2>/dev/null || echo 0; }
wait_for 10 "counter reaches $N" bash -c "[ \"\$('$WISP' state tls-q1 get n --data '$TEST_TMP/data-gw' 2>/dev/null)\" = $N ]" ||
  fail "the durable counter is $(count), expected $N"
if grep -q 'acknowledged on receipt' "$log"; then
  fail "durable triggers were downgraded on a TLS broker: $(grep 'acknowledged on receipt' "$log")"
fi
wispd_stop gw
[ "$(count)" = "$N" ] || fail "the counter moved on to $(count)"

# No client certificate: refused by the broker, reported, wispd keeps retrying.
log=$(wispd_log nocert)
"$WISPD" --functions "$fns" --broker "$BROKER_TLS_URI" --data "$TEST_TMP/data-nocert" \
  --tls-ca "$pki/ca.crt" >"$log" 2>&1 &
pid=$!
track_pid "$pid"
wait_for 15 "TLS failure reported" grep -q "connecting to 127.0.0.1:$BROKER_TLS_PORT failed: TLS handshake" "$log" ||
  { cat "$log" >&2; fail "no failure logged"; }
kill -0 "$pid" || fail "wispd gave up instead of retrying"
kill -TERM "$pid"; wait "$pid" || fail "wispd did not exit 0 while disconnected"

# A CA that did not sign the broker's certificate: the verification failure
# is named, wispd retries; with tls.insecure the same CA connects.
tls_make_certs "$TEST_TMP/other"
log=$(wispd_log badca)
"$WISPD" --functions "$fns" --broker "$BROKER_TLS_URI" --data "$TEST_TMP/data-badca" \
  --tls-ca "$TEST_TMP/other/ca.crt" --tls-cert "$pki/client.crt" --tls-key "$pki/client.key" \
  >"$log" 2>&1 &
pid=$!
track_pid "$pid"
wait_for 15 "verification failure reported" grep -q "certificate failed verification for '127.0.0.1': .*not correctly signed by the trusted CA" "$log" ||
  { cat "$log" >&2; fail "no verification failure logged"; }
wait_for 15 "a retry" bash -c "[ \$(grep -c 'failed verification' '$log') -ge 2 ]" ||
  { cat "$log" >&2; fail "no retry after the verification failure"; }
kill -0 "$pid" || fail "wispd exited after a verification failure"
grep -q 'connected to 127.0.0.1' "$log" && fail "connected with an untrusted certificate"
kill -TERM "$pid"; wait "$pid" || fail "wispd did not exit 0 while disconnected"

cat >"$TEST_TMP/insecure.json" <<JSON
{"broker": "$BROKER_TLS_URI",
 "mqtt": {"tls": {"ca": "$TEST_TMP/other/ca.crt", "cert": "$pki/client.crt", "key": "$pki/client.key",
                  "insecure": true}}}
JSON
WISPD_BROKER=$BROKER_TLS_URI wispd_start insecure "$fns" --config "$TEST_TMP/insecure.json"
wait_for 15 "insecure connect" grep -q "connected to 127.0.0.1:$BROKER_TLS_PORT as" "$(wispd_log insecure)" ||
  { cat "$(wispd_log insecure)" >&2; fail "tls.insecure did not connect"; }
grep -q 'without verifying' "$(wispd_log insecure)" || fail "no warning about tls.insecure"
wispd_stop insecure

# A CA file that does not exist is a clear configuration error at start.
rc=0
"$WISPD" --functions "$fns" --broker "$BROKER_TLS_URI" --data "$TEST_TMP/d3" \
  --tls-ca "$TEST_TMP/missing.crt" >"$TEST_TMP/missing.log" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "a missing CA file was accepted"
grep -q 'missing.crt' "$TEST_TMP/missing.log" || fail "the error does not name the file"
pass
