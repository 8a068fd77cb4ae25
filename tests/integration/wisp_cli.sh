#!/usr/bin/env bash
# wisp run / wisp validate as a user runs them: no broker, same executor,
# sandbox and limits as wispd.
set -euo pipefail
: "${WISP:?}" "${WISPD:?}" "${WISP_SOURCE_DIR:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
# The examples as the build assembles them (the native one needs its .so).
ex=${WISP_BUILD_DIR:?}/examples

# A hot reading alerts; stdout is exactly the published message.
out=$("$WISP" run "$ex/temp-alert" --event '{"dev":"kitchen","temp":31.5}' 2>"$tmp/err")
grep -q '^alerts/kitchen qos=1 retain=false {.*"temp":31.5' <<<"$out" || fail "no alert: $out"
grep -q 'level=warn mod=fn fn=temp-alert .*kitchen is at 31.5' "$tmp/err" || fail "ctx.log line missing"
grep -q 'mod=report fn=temp-alert .*outcome=ok .*cold=1 init_ms=' "$tmp/err" || fail "REPORT missing"

# A cool reading publishes nothing; --event @file and --topic work.
echo '{"temp": 12}' >"$tmp/ev.json"
out=$("$WISP" run "$ex/unit-convert" --event @"$tmp/ev.json" --topic sensors/attic/temp 2>/dev/null)
grep -q '^readings/attic/temp ' <<<"$out" || fail "unit-convert: $out"
grep -q '"f":53.6' <<<"$out" || fail "unit-convert value: $out"
out=$("$WISP" run "$ex/temp-alert" --event '{"temp": 12}' 2>/dev/null)
[ -z "$out" ] || fail "a cool reading published: $out"

# A handler error exits 1 with a traceback naming the line.
rc=0
"$WISP" run "$ex/temp-alert" --event 'not json' >/dev/null 2>"$tmp/err" || rc=$?
[ "$rc" -eq 1 ] || fail "handler error exit $rc"
grep -q 'outcome=error error="handler.lua:[0-9]*: expected' "$tmp/err" || fail "no traceback: $(cat "$tmp/err")"

# Limits hold in wisp run too; a stuck C call is killed.
mkdir -p "$tmp/stuck"
echo '{"name":"stuck","triggers":[{"type":"mqtt","topic":"x"}],"limits":{"timeout_ms":100}}' >"$tmp/stuck/function.json"
echo "return function() string.rep('a', 5000):find(string.rep('a-', 40) .. 'b') end" >"$tmp/stuck/handler.lua"
start=$(date +%s%N)
rc=0
"$WISP" run "$tmp/stuck" >/dev/null 2>"$tmp/err" || rc=$?
ms=$(( ($(date +%s%N) - start) / 1000000 ))
[ "$rc" -eq 1 ] || fail "stuck: exit $rc"
grep -q 'outcome=timeout' "$tmp/err" || fail "stuck: no timeout outcome"
[ "$ms" -lt 5000 ] || fail "stuck handler was not killed promptly (${ms} ms)"

# Invalid functions exit 2 with path:field: message.
mkdir -p "$tmp/bad"
echo '{"name":"bad","triggers":[],"bogus":1}' >"$tmp/bad/function.json"
echo 'return function() end' >"$tmp/bad/handler.lua"
rc=0
"$WISP" run "$tmp/bad" 2>"$tmp/err" || rc=$?
[ "$rc" -eq 2 ] || fail "invalid function exit $rc"
grep -q "$tmp/bad/function.json:" "$tmp/err" || fail "no path in: $(cat "$tmp/err")"

# validate: the examples are fine, the bad one is not.
"$WISP" validate "$ex" >"$tmp/out" || fail "examples do not validate"
[ "$(grep -c '^ok ' "$tmp/out")" -ge 3 ] || fail "expected 3 ok lines"
rc=0
"$WISP" validate "$tmp/bad" "$ex/csv-line" >"$tmp/out" 2>"$tmp/err" || rc=$?
[ "$rc" -eq 1 ] || fail "validate of a bad function exit $rc"
grep -q '^ok csv-line ' "$tmp/out" || fail "csv-line not ok"
grep -q '^invalid .*bad/function.json:' "$tmp/err" || fail "no invalid line"

# wispd refuses bad settings at start with the file and key, and a missing
# functions folder with its path; it never gets as far as connecting.
printf '{"mqtt": {"version": 4}}' >"$tmp/bad.json"
rc=0
"$WISPD" --functions "$ex" --data "$tmp/d" --config "$tmp/bad.json" 2>"$tmp/err" || rc=$?
[ "$rc" -eq 2 ] || fail "bad config exit $rc"
grep -q "$tmp/bad.json:mqtt.version: must be a whole number from 3 to 5" "$tmp/err" ||
  grep -q "mqtt.version: must be 3 or 5" "$tmp/err" || fail "bad config message: $(cat "$tmp/err")"
printf '{"mqtt": {"tls": {"cafile": "x"}}}' >"$tmp/bad2.json"
rc=0
"$WISPD" --functions "$ex" --data "$tmp/d" --config "$tmp/bad2.json" 2>"$tmp/err" || rc=$?
[ "$rc" -eq 2 ] && grep -q "bad2.json:mqtt.tls.cafile: unknown setting" "$tmp/err" ||
  fail "unknown key not reported: $(cat "$tmp/err")"
rc=0
"$WISPD" --functions "$tmp/nowhere" --data "$tmp/d" --broker tcp://127.0.0.1:1 2>"$tmp/err" || rc=$?
[ "$rc" -ne 0 ] && grep -q "$tmp/nowhere: cannot read the functions folder" "$tmp/err" ||
  fail "missing functions folder: $(cat "$tmp/err")"
rc=0
"$WISPD" --functions "$ex" --bogus 1 2>"$tmp/err" || rc=$?
[ "$rc" -eq 2 ] && grep -q "unknown option --bogus" "$tmp/err" || fail "unknown flag accepted"

# ctx.state in wisp run: a throwaway store by default, DIR/store with --data,
# visible to wisp state; output.envelope wraps messages as CloudEvents.
mkdir -p "$tmp/st"
printf '{"name": "st", "triggers": [{"type": "mqtt", "topic": "s/t"}], "output": {"envelope": "cloudevents"}}\n' >"$tmp/st/function.json"
printf 'return function(e, ctx) ctx.publish("o/n", {n = ctx.state.incr("n")}) end\n' >"$tmp/st/handler.lua"
"$WISP" run "$tmp/st" 2>/dev/null | grep -q '"data":{"n":1}' || fail "wisp run with state"
"$WISP" run "$tmp/st" 2>/dev/null | grep -q '"data":{"n":1}' || fail "the default store is not thrown away"
"$WISP" run "$tmp/st" --data "$tmp/std" >/dev/null 2>&1
out=$("$WISP" run "$tmp/st" --data "$tmp/std" 2>/dev/null)
echo "$out" | grep -q '"data":{"n":2}' || fail "--data does not keep state: $out"
echo "$out" | grep -q '"specversion":"1.0"' && echo "$out" | grep -Eq '"id":"[^"]+/0"' ||
  fail "no CloudEvents envelope: $out"
[ "$("$WISP" state st get n --data "$tmp/std")" = 2 ] || fail "wisp state get"
"$WISP" state st get missing --data "$tmp/std" 2>"$tmp/err" && fail "a missing key was found"
grep -q 'no such key' "$tmp/err" || fail "missing key message: $(cat "$tmp/err")"
"$WISP" state st --data "$tmp/nodata" 2>"$tmp/err" && fail "wisp state on a missing store succeeded"
echo 'not lmdb' >"$tmp/bad.mdb" && mkdir -p "$tmp/bad/store" && cp "$tmp/bad.mdb" "$tmp/bad/store/data.mdb"
rc=0
"$WISPD" --functions "$ex" --data "$tmp/bad" --broker tcp://127.0.0.1:1 2>"$tmp/err" || rc=$?
[ "$rc" -ne 0 ] && grep -q "not a Wisp store" "$tmp/err" || fail "corrupt store not refused: $(cat "$tmp/err")"

# --help everywhere.
"$WISP" --help >"$tmp/help" && grep -q 'Usage: wisp' "$tmp/help" || fail "wisp --help"
"$WISP" run --help >"$tmp/help" && grep -q 'Usage: wisp run' "$tmp/help" || fail "wisp run --help"
"$WISP" validate --help >"$tmp/help" && grep -q 'Usage: wisp validate' "$tmp/help" || fail "wisp validate --help"
"$WISP" state --help >"$tmp/help" && grep -q 'Usage: wisp state' "$tmp/help" || fail "wisp state --help"
"$WISP" dlq --help >"$tmp/help" && grep -q 'Usage: wisp dlq' "$tmp/help" || fail "wisp dlq --help"
"$WISP" backup --help >"$tmp/help" && grep -q 'Usage: wisp backup' "$tmp/help" || fail "wisp backup --help"
"$WISPD" --help >"$tmp/help" && grep -q 'mqtt.tls.ca' "$tmp/help" || fail "wispd --help lacks the settings reference"
echo "wisp_cli: 1 passed, 0 failed"
