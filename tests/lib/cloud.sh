# shellcheck shell=bash
# Helpers for tests with a real wisp-cloud and real wispd devices. Source after
# wispd_test.sh and broker_start.
#
#   cloud_start [wisp-cloud flags...]   starts wisp-cloud on a free port; sets CLOUD_URL,
#                                       exports WISP_CLOUD_URL / WISP_CLOUD_TOKEN for `wisp`
#   cloud_stop / cloud_kill            SIGTERM (checks exit 0) / SIGKILL
#   api METHOD PATH [curl args...]     the API's JSON answer on stdout (fails on 4xx/5xx)
#   device_start NAME LABELS [flags]   a wispd with cloud sync, trusting $TEST_TMP/trust
#   reported NAME                      the device's last reported state, as wisp-cloud has it
#   publisher_key                      $TEST_TMP/publisher.key, trusted by the devices

: "${WISP_CLOUD_BIN:?WISP_CLOUD_BIN must point at the wisp-cloud binary}"
CLOUD_PID=
CLOUD_URL=
CLOUD_TOKEN=test-token-$RANDOM$RANDOM

cloud_log() { echo "$TEST_TMP/cloud.log"; }

cloud_start() {
  mkdir -p "$TEST_TMP/cloud"
  printf '%s\n' "$CLOUD_TOKEN" >"$TEST_TMP/cloud.token"
  rm -f "$TEST_TMP/cloud/http.port"
  "$WISP_CLOUD_BIN" --broker "$BROKER_URI" --listen 127.0.0.1:0 --data "$TEST_TMP/cloud" \
    --token-file "$TEST_TMP/cloud.token" "$@" >>"$(cloud_log)" 2>&1 &
  CLOUD_PID=$!
  track_pid "$CLOUD_PID"
  wait_for 20 "wisp-cloud listening" test -s "$TEST_TMP/cloud/http.port" ||
    { cat "$(cloud_log)" >&2; fail "wisp-cloud did not start"; }
  CLOUD_URL="http://127.0.0.1:$(cat "$TEST_TMP/cloud/http.port")"
  export WISP_CLOUD_URL=$CLOUD_URL WISP_CLOUD_TOKEN=$CLOUD_TOKEN CLOUD_URL CLOUD_TOKEN
  wait_for 20 "wisp-cloud connected" bash -c "curl -sf '$CLOUD_URL/v1/health' | grep -q '\"connected\"'" ||
    { cat "$(cloud_log)" >&2; fail "wisp-cloud did not connect to the broker"; }
}

cloud_stop() {
  local rc=0
  kill -TERM "$CLOUD_PID" 2>/dev/null || true
  wait "$CLOUD_PID" || rc=$?
  [ "$rc" -eq 0 ] || { tail -20 "$(cloud_log)" >&2; fail "wisp-cloud exited with $rc"; }
}

cloud_kill() {
  kill -KILL "$CLOUD_PID" 2>/dev/null || true
  wait "$CLOUD_PID" 2>/dev/null || true
}

api() {
  local method=$1 path=$2; shift 2
  curl -sS --fail-with-body -X "$method" -H "Authorization: Bearer $CLOUD_TOKEN" "$@" "$CLOUD_URL$path"
}
# api_ok PATH JQ_EXPR: the answer of GET PATH satisfies JQ_EXPR (for wait_for).
api_ok() { curl -sf -H "Authorization: Bearer $CLOUD_TOKEN" "$CLOUD_URL$1" | jq -e "$2" >/dev/null; }
export -f api api_ok

publisher_key() {
  if [ ! -f "$TEST_TMP/publisher.key" ]; then
    "$WISP" keygen "$TEST_TMP/publisher" >/dev/null
    mkdir -p "$TEST_TMP/trust"
    cp "$TEST_TMP/publisher.pub" "$TEST_TMP/trust/publisher.pem"
  fi
  echo "$TEST_TMP/publisher.key"
}

device_start() {
  local name=$1 labels=$2; shift 2
  publisher_key >/dev/null
  mkdir -p "$TEST_TMP/local-$name"
  wispd_start "$name" "$TEST_TMP/local-$name" --cloud --cloud-trust "$TEST_TMP/trust" \
    --cloud-labels "$labels" "$@"
}

reported() { api GET "/v1/devices/$1" | jq -c '.functions // {}'; }

# The signed bundle message (cloud-sync/README.md) for BUNDLE and BUNDLE.sig.
bundle_message() {
  local n; n=$(stat -c %s "$1.sig")
  printf 'WISPSIGB'
  # shellcheck disable=SC2059 # the format is the point: four octal escapes
  printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $((n >> 24 & 255)) $((n >> 16 & 255)) $((n >> 8 & 255)) $((n & 255)))"
  cat "$1.sig" "$1"
}
