# Helpers for integration tests that run real wispd processes. Source after
# tests/lib/broker.sh (which provides test_tmp_init, broker_*, wait_for, fail).
#
#   wispd_start NAME FUNCTIONS_DIR [wispd flags...]   starts wispd, waits for "ready"
#   wispd_pid NAME / wispd_log NAME                    its pid / log file
#   wispd_stop NAME                                     SIGTERM, waits for exit, checks 0
#   sub_start NAME FILTER                               mosquitto_sub -v into $TEST_TMP/NAME.out
#   sub_wait NAME COUNT [TIMEOUT_S]                     waits for COUNT lines
#   pub TOPIC PAYLOAD [mosquitto_pub args...]           publishes to the test broker
#   make_fn DIR NAME TOPIC HANDLER_LUA [EXTRA_JSON]     writes a function folder
#                                                      (trigger QoS from $FN_QOS, default 0)

: "${WISPD:?WISPD must point at the wispd binary}"
: "${WISP:?WISP must point at the wisp binary}"

declare -A WISPD_PIDS=()
declare -A SUB_PIDS=()

wispd_log() { echo "$TEST_TMP/wispd-$1.log"; }
wispd_pid() { echo "${WISPD_PIDS[$1]}"; }

wispd_start() {
  local name=$1 fdir=$2; shift 2
  local log; log=$(wispd_log "$name")
  mkdir -p "$TEST_TMP/data-$name"
  "$WISPD" --functions "$fdir" --broker "${WISPD_BROKER:-$BROKER_URI}" \
    --data "$TEST_TMP/data-$name" --device "$name" "$@" >>"$log" 2>&1 &
  WISPD_PIDS[$name]=$!
  track_pid "$!"
  wait_for 20 "wispd $name ready" grep -q 'msg="ready' "$log" ||
    { cat "$log" >&2; fail "wispd $name did not become ready"; }
}

# Sends SIGTERM and waits for a clean exit (status 0).
wispd_stop() {
  local name=$1 pid=${WISPD_PIDS[$1]} rc=0
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" || rc=$?
  unset "WISPD_PIDS[$name]"
  [ "$rc" -eq 0 ] || { tail -20 "$(wispd_log "$name")" >&2; fail "wispd $name exited with $rc"; }
}


# The subscriber also listens on a probe topic; probes are published until
# one comes back, so the subscription is known to be in place. Probe lines
# are left out of every count.
sub_start() {
  local name=$1 filter=$2; shift 2
  local probe="wisp-test-probe/$name"
  : >"$TEST_TMP/$name.raw"
  mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -v -t "$filter" -t "$probe" "$@" >"$TEST_TMP/$name.raw" &
  SUB_PIDS[$name]=$!
  track_pid "$!"
  wait_for 10 "subscriber $name" bash -c "mosquitto_pub -h 127.0.0.1 -p $BROKER_PORT -t '$probe' -m probe; grep -q '^$probe ' '$TEST_TMP/$name.raw'" ||
    fail "subscriber $name did not come up"
}

# Lines received on NAME (without probes), written to $TEST_TMP/NAME.out.
sub_lines() { grep -v '^wisp-test-probe/' "$TEST_TMP/$1.raw" >"$TEST_TMP/$1.out" || true; cat "$TEST_TMP/$1.out"; }
sub_count() { sub_lines "$1" | grep -c '' || true; }

sub_wait() {
  local name=$1 count=$2 timeout=${3:-15}
  wait_for "$timeout" "$count lines on $name" bash -c "[ \$(grep -v '^wisp-test-probe/' '$TEST_TMP/$name.raw' | grep -c '') -ge $count ]" ||
    { echo "--- $name:" >&2; sub_lines "$name" >&2; wispd_log_tails; fail "expected $count messages on $name, got $(sub_count "$name")"; }
  sub_lines "$name" >/dev/null
}

# sub_wait_line NAME REGEX [TIMEOUT]: waits for a line matching REGEX (grep -E) on
# subscriber NAME; other messages on its filter (simulated devices) may come first.
sub_wait_line() {
  local name=$1 re=$2 timeout=${3:-15}
  wait_for "$timeout" "a line like $re on $name" bash -c "grep -v '^wisp-test-probe/' '$TEST_TMP/$name.raw' | grep -Eq -- \"\$1\"" _ "$re" ||
    { echo "--- $name:" >&2; sub_lines "$name" >&2; wispd_log_tails; fail "no line like $re on $name"; }
  sub_lines "$name" >/dev/null
}

# The last lines of every wispd log of the test (for a failure's post-mortem).
wispd_log_tails() {
  local f
  for f in "$TEST_TMP"/wispd-*.log; do
    [ -f "$f" ] || continue
    echo "--- tail of $f:" >&2
    grep -v 'mod=report' "$f" | tail -n 15 >&2
  done
}

pub() {
  local topic=$1 payload=$2; shift 2
  mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -t "$topic" -m "$payload" "$@"
}

make_fn() {
  local dir=$1 name=$2 topic=$3 handler=$4 extra=${5:-}
  mkdir -p "$dir/$name"
  printf '{"name": "%s", "triggers": [{"type": "mqtt", "topic": "%s", "qos": %d}]%s}\n' \
    "$name" "$topic" "${FN_QOS:-0}" "${extra:+, $extra}" >"$dir/$name/function.json"
  printf '%s\n' "$handler" >"$dir/$name/handler.lua"
}
