#!/usr/bin/env bash
# Signed function bundles through the wisp CLI: keygen, bundle, sign,
# verify, unpack, the refusals a gateway relies on, and interop with the
# openssl CLI in both directions (openssl signs / wisp verifies and back).
set -euo pipefail
: "${WISP:?}" "${WISP_SOURCE_DIR:?}"
command -v openssl >/dev/null || { echo "SKIP: no openssl" >&2; exit 0; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect_rc() { # expected command...
    local want=$1 rc=0
    shift
    "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
    [ "$rc" -eq "$want" ] || fail "$* exited $rc, expected $want: $(cat "$tmp/out" "$tmp/err")"
}

fn=$WISP_SOURCE_DIR/examples/csv-line   # has lib/
mkdir -p "$tmp/trust" "$tmp/empty"

# keygen: 0600 private key, no overwrite.
expect_rc 0 "$WISP" keygen "$tmp/pub1"
[ "$(stat -c %a "$tmp/pub1.key")" = 600 ] || fail "key mode $(stat -c %a "$tmp/pub1.key")"
expect_rc 1 "$WISP" keygen "$tmp/pub1"
grep -q 'refusing to overwrite' "$tmp/err" || fail "keygen overwrite: $(cat "$tmp/err")"
cp "$tmp/pub1.pub" "$tmp/trust/pub1.pem"

# bundle + sign + verify + unpack.
expect_rc 0 "$WISP" bundle "$fn" -o "$tmp/csv.wb"
expect_rc 0 "$WISP" sign "$tmp/csv.wb" --key "$tmp/pub1.key"
[ -s "$tmp/csv.wb.sig" ] || fail "no signature written"
expect_rc 0 "$WISP" verify "$tmp/csv.wb" --trust "$tmp/trust"
grep -q 'function csv-line version' "$tmp/out" || fail "no manifest summary: $(cat "$tmp/out")"
grep -q 'lib/' "$tmp/out" || fail "lib/ not listed: $(cat "$tmp/out")"
expect_rc 0 "$WISP" unpack "$tmp/csv.wb" --trust "$tmp/trust" -o "$tmp/unpacked"
diff -r "$fn" "$tmp/unpacked" >/dev/null || fail "unpacked folder differs from the source"
"$WISP" validate "$tmp/unpacked" >/dev/null || fail "unpacked function does not validate"
expect_rc 1 "$WISP" unpack "$tmp/csv.wb" --trust "$tmp/trust" -o "$tmp/unpacked"
grep -q 'already exists' "$tmp/err" || fail "unpack over an existing dir: $(cat "$tmp/err")"

# Refusals: empty trust dir, untrusted key, tampered bundle, malformed sig, unsigned.
expect_rc 1 "$WISP" verify "$tmp/csv.wb" --trust "$tmp/empty"
grep -q 'no usable trusted key' "$tmp/err" || fail "empty trust: $(cat "$tmp/err")"
expect_rc 0 "$WISP" keygen "$tmp/other"
cp "$tmp/csv.wb" "$tmp/other.wb"
expect_rc 0 "$WISP" sign "$tmp/other.wb" --key "$tmp/other.key"
expect_rc 1 "$WISP" verify "$tmp/other.wb" --trust "$tmp/trust"
grep -q 'bad signature' "$tmp/err" || fail "untrusted key: $(cat "$tmp/err")"
cp "$tmp/csv.wb" "$tmp/bad.wb" && cp "$tmp/csv.wb.sig" "$tmp/bad.wb.sig"
printf 'X' | dd of="$tmp/bad.wb" bs=1 seek=$(( $(stat -c %s "$tmp/bad.wb") - 2 )) conv=notrunc 2>/dev/null
expect_rc 1 "$WISP" unpack "$tmp/bad.wb" --trust "$tmp/trust" -o "$tmp/bad"
grep -q 'bad signature: the bundle was modified (.*sha256 mismatch' "$tmp/err" || fail "tampered: $(cat "$tmp/err")"
[ ! -e "$tmp/bad" ] || fail "a refused bundle was unpacked"
ls "$tmp" | grep -q 'tmp-' && fail "a temporary folder was left behind"
echo garbage >"$tmp/bad.wb.sig"
expect_rc 1 "$WISP" verify "$tmp/bad.wb" --trust "$tmp/trust"
grep -q 'malformed signature' "$tmp/err" || fail "malformed sig: $(cat "$tmp/err")"
cp "$tmp/csv.wb" "$tmp/unsigned.wb"
expect_rc 1 "$WISP" verify "$tmp/unsigned.wb" --trust "$tmp/trust"
grep -q 'no signature' "$tmp/err" || fail "unsigned: $(cat "$tmp/err")"
expect_rc 0 "$WISP" unpack "$tmp/unsigned.wb" --trust "$tmp/trust" -o "$tmp/dev" --dev-unsigned
grep -q '^WARNING: .*NOT SIGNED' "$tmp/err" || fail "no warning for --dev-unsigned: $(cat "$tmp/err")"
[ -f "$tmp/dev/function.json" ] || fail "--dev-unsigned did not unpack"

# Usage errors exit 2.
expect_rc 2 "$WISP" verify "$tmp/csv.wb"
expect_rc 2 "$WISP" bundle "$fn"
expect_rc 2 "$WISP" sign "$tmp/csv.wb" --key

# openssl signs (SEC1 and PKCS#8 keys), wisp verifies.
openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/ossl.key" 2>/dev/null
openssl pkey -in "$tmp/ossl.key" -pubout -out "$tmp/trust/ossl.pem"
openssl dgst -sha256 -sign "$tmp/ossl.key" -out "$tmp/csv.wb.sig" "$tmp/csv.wb"
expect_rc 0 "$WISP" verify "$tmp/csv.wb" --trust "$tmp/trust"
grep -q 'ossl.pem' "$tmp/out" || fail "openssl signature not credited to ossl.pem: $(cat "$tmp/out")"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/pk8.key" 2>/dev/null
expect_rc 0 "$WISP" sign "$tmp/csv.wb" --key "$tmp/pk8.key"
openssl pkey -in "$tmp/pk8.key" -pubout -out "$tmp/pk8.pub"
openssl dgst -sha256 -verify "$tmp/pk8.pub" -signature "$tmp/csv.wb.sig" "$tmp/csv.wb" >/dev/null ||
    fail "openssl does not verify wisp's signature with a PKCS#8 key"

# wisp signs, openssl verifies.
expect_rc 0 "$WISP" sign "$tmp/csv.wb" --key "$tmp/pub1.key"
openssl dgst -sha256 -verify "$tmp/pub1.pub" -signature "$tmp/csv.wb.sig" "$tmp/csv.wb" >/dev/null ||
    fail "openssl does not verify wisp's signature"

# A P-384 key is refused for signing and ignored (with the reason) when trusted.
openssl ecparam -name secp384r1 -genkey -noout -out "$tmp/p384.key" 2>/dev/null
expect_rc 1 "$WISP" sign "$tmp/csv.wb" --key "$tmp/p384.key"
grep -q 'must be on P-256' "$tmp/err" || fail "P-384 signing key: $(cat "$tmp/err")"
mkdir "$tmp/t384" && openssl pkey -in "$tmp/p384.key" -pubout -out "$tmp/t384/p384.pem"
openssl dgst -sha256 -sign "$tmp/p384.key" -out "$tmp/csv.wb.sig" "$tmp/csv.wb"
expect_rc 1 "$WISP" verify "$tmp/csv.wb" --trust "$tmp/t384"
grep -q 'secp384r1' "$tmp/err" || fail "P-384 trusted key: $(cat "$tmp/err")"

echo "wisp_bundle: ok"
