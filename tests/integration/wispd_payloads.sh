#!/usr/bin/env bash
# Malformed, huge, binary and non-UTF-8 payloads: each gets a clear outcome
# and none disturbs wispd or the events after it.
source "$(dirname "$0")/../lib/wispd_test.sh"
broker_start

make_fn "$fns" inspect 'p/+' 'return function(e, ctx)
  ctx.publish("out/" .. e.subject:sub(3), #e.payload .. " " .. type(e.data) .. " " .. tostring(e.datacontenttype))
end' '"limits": {"memory_kb": 8192}'
wispd_start gw "$fns"
log=$(wispd_log gw)
sub_start out 'out/#'

head -c 2000 /dev/urandom >"$TEST_TMP/binary"
printf 'caf\xe9 \xff\xfe {"x":' >"$TEST_TMP/latin1"
printf 'a\0b\0c' >"$TEST_TMP/nul"
head -c $((512 * 1024)) /dev/zero | tr '\0' 'x' >"$TEST_TMP/big"
head -c $((2 * 1024 * 1024)) /dev/zero | tr '\0' 'y' >"$TEST_TMP/huge"
printf '{"a": [1, 2, {"b": null}], "s": "\\u00e9"}' >"$TEST_TMP/json"
printf '{"a": [1, 2,' >"$TEST_TMP/truncated"
nested=$(printf '%.0s[' $(seq 1 5000))
pubf() { mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -t "$1" -f "$2"; }

pubf p/json "$TEST_TMP/json"
pubf p/truncated "$TEST_TMP/truncated"
pubf p/binary "$TEST_TMP/binary"
pubf p/latin1 "$TEST_TMP/latin1"
pubf p/nul "$TEST_TMP/nul"
mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -t p/empty -n
pub p/nested "$nested"
pubf p/big "$TEST_TMP/big"
pubf p/huge "$TEST_TMP/huge"
pub p/after '{"ok": true}'
sub_wait out 9 30
out=$(sub_lines out)
expect() { grep -qx "$1" <<<"$out" || fail "expected '$1' in: $out"; }
expect 'out/json 41 table application/json'
expect 'out/truncated 12 nil nil'
expect 'out/binary 2000 nil nil'
expect 'out/latin1 13 nil nil'
expect 'out/nul 5 nil nil'
expect 'out/empty 0 nil nil'
expect 'out/nested 5000 nil nil'
expect "out/big $((512 * 1024)) nil nil"
expect 'out/after 12 table application/json'
! grep -q '^out/huge' <<<"$out" || fail "a payload over events.max_payload_kb was processed"
grep -q 'dropped a 2097152-byte message on p/huge: larger than events.max_payload_kb' "$log" ||
  fail "the oversized payload was not reported"
wispd_stop gw
pass
