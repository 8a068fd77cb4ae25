#!/usr/bin/env bash
# wisp-cloud against a real mosquitto: devices played with mosquitto_pub/sub,
# the API through curl. Registration and labels, bundle upload (published
# retained), a canary rollout that bakes and rolls out, a second one halted
# and rolled back when a canary reports rolled_back, exact metering totals
# after duplicate batches and a restart, acks, an edited chain, the API's
# refusals and the CSV export.
source "$(dirname "$0")/../lib/wispd_test.sh"
: "${WISP_CLOUD:?}" "${WISP_CLOUD_METER_TOOL:?}" "${WISP:?}" "${WISP_SOURCE_DIR:?}"
for tool in curl jq openssl sha256sum; do
    command -v "$tool" >/dev/null || { echo "SKIP: no $tool" >&2; exit 0; }
done

broker_start || fail "broker did not start"
data=$TEST_TMP/cloud
mkdir -p "$data"
echo "s3cret-token" >"$TEST_TMP/token"
AUTH=(-H "Authorization: Bearer s3cret-token")
CLOUD_PID=

cloud_start() {
    rm -f "$data/http.port"
    "$WISP_CLOUD" --broker "$BROKER_URI" --listen 127.0.0.1:0 --data "$data" \
        --token-file "$TEST_TMP/token" --log-level debug \
        >>"$TEST_TMP/cloud.out" 2>>"$TEST_TMP/cloud.log" &
    CLOUD_PID=$!
    track_pid "$CLOUD_PID"
    wait_for 10 "wisp-cloud's http.port" test -s "$data/http.port" || fail "no http.port"
    HTTP=http://127.0.0.1:$(cat "$data/http.port")
    wait_for 10 "mqtt connected" health_connected || fail "never connected: $(tail "$TEST_TMP/cloud.log")"
}
health_connected() { curl -sf "$HTTP/v1/health" | grep -q '"mqtt":"connected"'; }
cloud_stop() {
    kill -TERM "$CLOUD_PID"
    local rc=0
    wait "$CLOUD_PID" || rc=$?
    [[ $rc -eq 0 ]] || fail "wisp-cloud exited $rc on SIGTERM"
}

# api METHOD PATH [curl args...]: the body on stdout, the status in $TEST_TMP/status
api() {
    local method=$1 path=$2
    shift 2
    curl -s -o "$TEST_TMP/body" -w '%{http_code}' -X "$method" "${AUTH[@]}" "$@" \
        "$HTTP$path" >"$TEST_TMP/status"
    cat "$TEST_TMP/body"
}
status() { cat "$TEST_TMP/status"; }
expect_status() { # WANT METHOD PATH [curl args]
    local want=$1
    shift
    local body
    body=$(api "$@")
    [[ $(status) == "$want" ]] || fail "$1 $2: status $(status), expected $want: $body"
    echo "$body"
}

cloud_start
grep -q "listening on http://127.0.0.1:" "$TEST_TMP/cloud.out" || fail "no listening line"

# ---- registration and labels ----
for i in 1 2 3; do
    pub wisp/v1/gw-$i/hello "{\"device\":\"gw-$i\",\"labels\":{\"site\":\"a\"},\"wispd\":\"0.1.0\",\"arch\":\"x86_64\"}" -q 1
done
pub wisp/v1/gw-4/hello '{"device":"gw-4","labels":{"site":"b"}}' -q 1
pub wisp/v1/gw-4/status '{"online":true}' -q 1 -r
devices_n() { [[ $(api GET "/v1/devices" | jq '.devices | length') == "$1" ]]; }
wait_for 5 "4 devices" devices_n 4 || fail "devices: $(api GET /v1/devices)"
[[ $(api GET "/v1/devices?label=site=a" | jq '.devices | length') == 3 ]] || fail "selector site=a"
expect_status 200 PUT /v1/devices/gw-4/labels -d '{"labels":{"tier":"gold"}}' >/dev/null
[[ $(api GET /v1/devices/gw-4 | jq -r '.labels.tier + .labels.site') == goldb ]] || fail "labels"

# ---- refusals ----
code=$(curl -s -o /dev/null -w '%{http_code}' "$HTTP/v1/devices")
[[ $code == 401 ]] || fail "no token gave $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer wrong" "$HTTP/v1/devices")
[[ $code == 401 ]] || fail "wrong token gave $code"
expect_status 400 POST /v1/rollouts -d '{"bundle": ' | grep -q body || fail "bad JSON"
expect_status 400 POST /v1/rollouts -d '{"bundle": 7}' | grep -q '"error":"bundle' || fail "field"
expect_status 404 GET /v1/rollouts/r-77 | grep -q error || fail "unknown rollout"
expect_status 404 GET /v1/devices/nobody >/dev/null
expect_status 405 DELETE /v1/rollouts >/dev/null
expect_status 400 GET "/v1/devices?label=site" | grep -q label || fail "bad selector"
expect_status 404 POST /v1/rollouts -d "{\"bundle\":\"$(printf '%064d' 0)\"}" >/dev/null
head -c $((1024 * 1024 + 10)) /dev/zero | tr '\0' ' ' >"$TEST_TMP/big.json"
expect_status 413 POST /v1/rollouts --data-binary @"$TEST_TMP/big.json" >/dev/null

# ---- bundles ----
cp -r "$WISP_SOURCE_DIR/examples/csv-line" "$TEST_TMP/fn1"
cp -r "$WISP_SOURCE_DIR/examples/csv-line" "$TEST_TMP/fn2"
echo "-- v2" >>"$TEST_TMP/fn2/handler.lua"
"$WISP" bundle "$TEST_TMP/fn1" -o "$TEST_TMP/v1.wb" >/dev/null || fail "wisp bundle v1"
"$WISP" bundle "$TEST_TMP/fn2" -o "$TEST_TMP/v2.wb" >/dev/null || fail "wisp bundle v2"
"$WISP" keygen "$TEST_TMP/pub" >/dev/null || fail "keygen"
"$WISP" sign "$TEST_TMP/v1.wb" --key "$TEST_TMP/pub.key" >/dev/null || fail "sign"
signed_msg() { # BUNDLE [SIG] > message
    local len=0
    [[ -n ${2:-} ]] && len=$(stat -c %s "$2")
    printf 'WISPSIGB'
    printf "\\x$(printf %02x $((len >> 24 & 255)))\\x$(printf %02x $((len >> 16 & 255)))"
    printf "\\x$(printf %02x $((len >> 8 & 255)))\\x$(printf %02x $((len & 255)))"
    [[ -n ${2:-} ]] && cat "$2"
    cat "$1"
}
signed_msg "$TEST_TMP/v1.wb" "$TEST_TMP/v1.wb.sig" >"$TEST_TMP/v1.msg"
signed_msg "$TEST_TMP/v2.wb" >"$TEST_TMP/v2.msg"
SHA1=$(sha256sum "$TEST_TMP/v1.wb" | cut -c1-64)
SHA2=$(sha256sum "$TEST_TMP/v2.wb" | cut -c1-64)
out=$(expect_status 201 POST /v1/bundles --data-binary @"$TEST_TMP/v1.msg" -H 'Content-Type: application/octet-stream')
[[ $(jq -r '.sha256 + " " + .name + " " + (.signed|tostring)' <<<"$out") == "$SHA1 csv-line true" ]] || fail "bundle answer: $out"
out=$(expect_status 201 POST /v1/bundles --data-binary @"$TEST_TMP/v2.msg")
[[ $(jq -r .signed <<<"$out") == false ]] || fail "v2 answer: $out"
mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -t "wisp/v1/bundles/$SHA1" -C 1 -W 5 >"$TEST_TMP/retained.msg" ||
    fail "no retained bundle message"
[[ $(($(stat -c %s "$TEST_TMP/retained.msg") - 1)) == $(stat -c %s "$TEST_TMP/v1.msg") ]] ||
    fail "retained bundle message differs in size"
printf 'WISPSIGB\0\0\0\0garbage' >"$TEST_TMP/bad.msg"
expect_status 400 POST /v1/bundles --data-binary @"$TEST_TMP/bad.msg" | grep -q '"error":"bundle' ||
    fail "bad bundle not refused"
expect_status 400 POST /v1/bundles --data-binary 'nope' >/dev/null

# ---- rollout 1: canary, bake, rolling, done ----
desired() { mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -t "wisp/v1/$1/desired" -C 1 -W 2 --retained-only 2>/dev/null || true; }
report() { # DEVICE SHA STATUS
    pub "wisp/v1/$1/reported" "{\"device\":\"$1\",\"functions\":{\"csv-line\":{\"bundle\":\"$2\",\"status\":\"$3\",\"invocations\":0,\"errors\":0,\"error\":\"health check failed\"}}}" -q 1 -r
}
ro_state() { api GET "/v1/rollouts/$1" | jq -r .state; }
state_is() { [[ $(ro_state "$1") == "$2" ]]; }
out=$(expect_status 201 POST /v1/rollouts -d "{\"bundle\":\"$SHA1\",\"selector\":\"site=a\",\"canary_percent\":34,\"bake_s\":1}")
R1=$(jq -r .id <<<"$out")
[[ $(jq -r '.state + " " + .function + " " + (.counts.canary_devices|tostring)' <<<"$out") == "canary csv-line 2" ]] || fail "rollout: $out"
desired gw-1 | grep -q "$SHA1" || fail "gw-1 got no desired state"
[[ -z $(desired gw-3) ]] || fail "gw-3 got the bundle during the canary phase"
report gw-1 "$SHA1" active
report gw-2 "$SHA1" active
wait_for 5 "rolling" state_is "$R1" rolling || fail "rollout 1 never rolled: $(api GET /v1/rollouts/$R1)"
desired gw-3 | grep -q "$SHA1" || fail "gw-3 got no desired state after the bake"
[[ -z $(desired gw-4) ]] || fail "gw-4 is not selected but got a desired state"
report gw-3 "$SHA1" active
wait_for 5 "done" state_is "$R1" done || fail "rollout 1 not done: $(api GET /v1/rollouts/$R1)"

# ---- rollout 2: a canary rolls back -> halted -> rolled_back ----
out=$(expect_status 201 POST /v1/rollouts -d "{\"bundle\":\"$SHA2\",\"selector\":\"site=a\",\"canary_percent\":34,\"bake_s\":30}")
R2=$(jq -r .id <<<"$out")
desired gw-1 | grep -q "$SHA2" || fail "gw-1 got no v2"
report gw-1 "$SHA1" rolled_back
wait_for 5 "rolled_back" state_is "$R2" rolled_back || fail "rollout 2: $(api GET /v1/rollouts/$R2)"
out=$(api GET "/v1/rollouts/$R2")
jq -e '.halted_at and .rolled_back_at and (.halted_reason | test("gw-1"))' <<<"$out" >/dev/null || fail "halt details: $out"
desired gw-1 | grep -q "$SHA1" || fail "gw-1 was not given v1 back"
desired gw-2 | grep -q "$SHA1" || fail "gw-2 was not given v1 back"
expect_status 409 POST "/v1/rollouts/$R2/rollback" >/dev/null
expect_status 409 POST "/v1/rollouts/$R2/halt" >/dev/null
[[ $(api GET /v1/rollouts | jq -r '.rollouts[0].id') == "$R2" ]] || fail "rollouts not newest first"

# ---- metering ----
mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -t 'wisp/v1/+/meter/ack' -v >"$TEST_TMP/acks" &
track_pid $!
sleep 0.3 # the subscription must be in place before the batches (no condition to await)
meter() { pub "wisp/v1/$1/meter" "$("$WISP_CLOUD_METER_TOOL" "$1" "$2" "$3" "${@:4}")" -q 1; }
meter gw-1 1 50
meter gw-1 1 50
meter gw-1 40 80
meter gw-2 1 30
acked() { grep -q "wisp/v1/$1/meter/ack {\"upto\":$2" "$TEST_TMP/acks"; }
wait_for 5 "ack 80" acked gw-1 80 || fail "acks: $(cat "$TEST_TMP/acks")"
wait_for 5 "ack 30" acked gw-2 30 || fail "acks: $(cat "$TEST_TMP/acks")"
totals() { api GET "/v1/meter?by=device&period=day" | jq -c '[.rows[] | [.device, .invocations, .errors, .billed_ms]]'; }
want='[["gw-1",80,16,240],["gw-2",30,6,90]]'
[[ $(totals) == "$want" ]] || fail "totals $(totals), expected $want"

cloud_stop
cloud_start
meter gw-1 1 80
wait_for 5 "ack after restart" bash -c "[[ \$(grep -c 'gw-1/meter/ack {\"upto\":80' '$TEST_TMP/acks') -ge 2 ]]" ||
    fail "no ack after restart"
[[ $(totals) == "$want" ]] || fail "totals after a restart $(totals), expected $want"
[[ $(api GET /v1/devices/gw-1 | jq -c '[.meter.records, .meter.head_seq, .meter.gaps]') == '[80,80,0]' ]] ||
    fail "meter cursor: $(api GET /v1/devices/gw-1)"
[[ $(ro_state "$R1") == done && $(ro_state "$R2") == rolled_back ]] || fail "rollouts lost in the restart"

meter gw-2 31 40 --edit 35
wait_for 5 "edit refused" grep -q 'gw-2/meter/ack {"upto":34,"error":"record seq 35' "$TEST_TMP/acks" ||
    fail "edited record: $(cat "$TEST_TMP/acks")"
api GET /v1/devices/gw-2 | jq -e '.meter.chain_error | test("seq 35")' >/dev/null || fail "not flagged"

csv=$(curl -s "${AUTH[@]}" "$HTTP/v1/meter?by=device&format=csv")
head -1 <<<"$csv" | grep -q '^period,device,invocations,errors,billed_ms,gb_seconds,bytes_in,bytes_out' ||
    fail "csv header: $csv"
grep -q '^2024-05-01T10:00:00Z,gw-1,80,16,240,0.003750000,960,3200' <<<"$csv" || fail "csv row: $csv"

# ---- usage errors ----
rc=0
"$WISP_CLOUD" --bogus >/dev/null 2>"$TEST_TMP/err" || rc=$?
[[ $rc == 2 ]] && grep -q -- --bogus "$TEST_TMP/err" || fail "bad flag: rc $rc $(cat "$TEST_TMP/err")"
rc=0
"$WISP_CLOUD" --broker "$BROKER_URI" --listen "127.0.0.1:$(cat "$data/http.port")" --data "$TEST_TMP" \
    --token x >/dev/null 2>"$TEST_TMP/err" || rc=$?
[[ $rc == 1 ]] && grep -q "cannot listen" "$TEST_TMP/err" || fail "port in use: rc $rc $(cat "$TEST_TMP/err")"
cloud_stop
pass
