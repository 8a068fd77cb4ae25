#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole ctest suite.
#   scripts/test.sh              everything
#   scripts/test.sh -L unit      any ctest arguments are passed through
# Environment: BUILD_DIR (default build), WISP_SANITIZE (e.g. address,undefined).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
build=${BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWISP_SANITIZE="${WISP_SANITIZE:-}" >/dev/null
cmake --build "$build" -j"$(nproc)"
cd "$build"
ctest --output-on-failure -j2 "$@"
