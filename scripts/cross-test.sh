#!/usr/bin/env bash
# Cross-builds Wisp for another CPU and runs its tests under qemu-user:
#
#   scripts/cross-test.sh arm64
#
# 1. Installs what is missing (idempotent; root or sudo, like install-deps.sh):
#    the cross compiler, qemu-user, the :arm64 -dev packages matching the host's
#    and the host's mosquitto for the end-to-end test.
# 2. Configures build-arm64/ with firmware/toolchain-aarch64.cmake
#    (WISP_TESTS=ON, WISP_WERROR=ON), builds everything, runs `ctest -L unit`
#    there (each test binary under qemu-aarch64).
# 3. Runs tests/integration/wispd_basic.sh unchanged with WISPD/WISP pointing at
#    wrappers that start the arm64 binaries under qemu-aarch64: a host mosquitto
#    on a free loopback port, publishes, the functions' output, SIGTERM, exit 0.
#
# Exit status: 0 all passed, 1 a step failed, 2 usage, 77 skipped because the
# mirror cannot serve matching packages for the target architecture.
#
# Under qemu-user, seccomp filters cannot be installed (qemu refuses
# PR_SET_SECCOMP), so the executor runs unconfined with a warning; the tests
# see WISP_UNDER_QEMU=1 and skip only the checks that need the kernel filter.
set -euo pipefail

usage() {
  echo "usage: $0 arm64" >&2
  exit 2
}
[ $# -eq 1 ] || usage
arch=$1
case "$arch" in
  arm64)
    triplet=aarch64-linux-gnu
    qemu="qemu-aarch64"
    loader=ld-linux-aarch64.so.1
    toolchain=firmware/toolchain-aarch64.cmake
    ;;
  *) usage ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build-$arch
jobs=${WISP_JOBS:-2}
say() { echo "cross-test: $*"; }
skip() {
  echo "cross-test: $arch packages unavailable: $*" >&2
  exit 77
}

# --- 1. packages -------------------------------------------------------------
host_packages=(
  cmake make pkg-config                      # build tools (run on the host)
  "gcc-$triplet" "binutils-$triplet"         # the cross compiler, strip
  qemu-user                                  # runs the target binaries
  mosquitto mosquitto-clients                # the broker for the end-to-end test
)
# The -dev packages scripts/install-deps.sh installs for the host, for the target.
target_packages=(
  libpaho-mqtt-dev libssl-dev liblua5.4-dev lua-cjson-dev libcjson-dev
  liblmdb-dev libmbedtls-dev libmicrohttpd-dev
)
packages=("${host_packages[@]}")
for p in "${target_packages[@]}"; do
  packages+=("$p:$arch")
done

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=()
for p in "${packages[@]}"; do
  installed "$p" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  say "all ${#packages[@]} packages already installed"
else
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "cross-test: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
    say "enabling the $arch architecture (dpkg --add-architecture $arch)"
    "${sudo[@]}" dpkg --add-architecture "$arch"
  fi
  say "installing ${missing[*]}"
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  if ! "${sudo[@]}" apt-get update -q >"$log" 2>&1; then
    cat "$log" >&2
    skip "apt-get update failed: $(grep -E '^(E|W):' "$log" | head -3 | tr '\n' ' ')"
  fi
  # Dry run first: multiarch needs the same version of every shared package
  # on both architectures; when the mirror is out of step apt says so here,
  # before anything changes. Nothing on the host may be removed for it.
  if ! apt-get install -s -q --no-install-recommends --no-remove "${missing[@]}" >"$log" 2>&1; then
    cat "$log" >&2
    skip "$(grep -E '^E:|but it is not (going to be )?installable|but .* is to be installed|Depends:' "$log" | head -4 | sed 's/^ *//' | tr '\n' ' ')"
  fi
  upgrades=$(sed -n 's/^\([0-9]*\) upgraded,.*/\1/p' "$log")
  [ "${upgrades:-0}" -eq 0 ] || say "note: $upgrades host package(s) move to the version their :$arch twin needs (multiarch keeps them in step)"
  "${sudo[@]}" apt-get install -y -q --no-install-recommends --no-remove "${missing[@]}"
fi
command -v "$triplet-gcc" >/dev/null || { echo "cross-test: $triplet-gcc not found" >&2; exit 1; }
command -v "$qemu" >/dev/null || { echo "cross-test: $qemu not found" >&2; exit 1; }

# --- 2. configure, build, unit tests under qemu -------------------------------
# Tests read this to skip only what qemu-user cannot do (seccomp filters).
export WISP_UNDER_QEMU=1
say "configuring $build"
cmake -S "$root" -B "$build" -DCMAKE_TOOLCHAIN_FILE="$root/$toolchain" \
  -DWISP_TESTS=ON -DWISP_WERROR=ON >"$build.configure.log" 2>&1 ||
  { cat "$build.configure.log" >&2; echo "cross-test: configure failed" >&2; exit 1; }
grep -E 'WISP_PAHO|Found' "$build.configure.log" | sed 's/^/  /' || true
mv "$build.configure.log" "$build/configure.log"
say "building (-j$jobs)"
cmake --build "$build" -j "$jobs"
file_info=$(file -b "$build/runtime/wispd" 2>/dev/null || true)
[ -z "$file_info" ] || say "wispd: ${file_info%%, BuildID*}"

say "unit tests under $qemu (WISP_UNDER_QEMU=1: seccomp checks skipped, qemu-user cannot install filters)"
unit_rc=0
(cd "$build" && ctest -L unit -j 1 --output-on-failure) | tee "$build/unit.log" || unit_rc=$?
unit_line=$(grep -E 'tests passed|tests failed' "$build/unit.log" | tail -1 || true)

# --- 3. one end-to-end MQTT test: arm64 wispd under qemu, host mosquitto --------
# The same qemu root as the toolchain file's CMAKE_CROSSCOMPILING_EMULATOR:
# the dynamic loader must come from the same glibc as libc.so.6 (see there).
qemu_root=/usr/$triplet
[ ! -e "/lib/$loader" ] || qemu_root=/
wrappers=$build/qemu-wrappers
mkdir -p "$wrappers"
for bin in wispd wisp; do
  printf '#!/bin/sh\nexec %s -L %s %s "$@"\n' "$qemu" "$qemu_root" "$build/runtime/$bin" >"$wrappers/$bin"
  chmod +x "$wrappers/$bin"
done
say "end to end: tests/integration/wispd_basic.sh with the $arch wispd under $qemu"
e2e_rc=0
WISP_SOURCE_DIR=$root WISP_BUILD_DIR=$build WISPD=$wrappers/wispd WISP=$wrappers/wisp \
  bash "$root/tests/integration/wispd_basic.sh" || e2e_rc=$?

# --- summary -------------------------------------------------------------------
strip_size() {
  local tmp size
  tmp=$(mktemp)
  "$triplet-strip" -o "$tmp" "$1"
  size=$(stat -c %s "$tmp")
  rm -f "$tmp"
  echo "$size"
}
echo
echo "cross-test summary ($arch, $triplet, run under $qemu):"
echo "  unit tests (ctest -L unit): ${unit_line:-no result} [$([ $unit_rc -eq 0 ] && echo PASS || echo FAIL)]"
echo "  end to end (wispd_basic.sh, arm64 wispd + host mosquitto): $([ $e2e_rc -eq 0 ] && echo PASS || echo "FAIL ($e2e_rc)")"
skips=$(grep -h '^skip ' "$build/Testing/Temporary/LastTest.log" 2>/dev/null | sort -u | sed 's/^/    /' || true)
echo "  skipped under qemu-user (WISP_UNDER_QEMU=1): ${skips:+$'\n'}${skips:-nothing}"
for bin in wispd wisp; do
  echo "  $bin stripped: $(strip_size "$build/runtime/$bin") bytes (unstripped $(stat -c %s "$build/runtime/$bin"))"
done
passed=$(( (unit_rc == 0) + (e2e_rc == 0) ))
echo "cross-test: $passed passed, $((2 - passed)) failed"
[ $unit_rc -eq 0 ] && [ $e2e_rc -eq 0 ]
