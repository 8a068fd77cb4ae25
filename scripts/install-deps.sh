#!/usr/bin/env bash
# Installs exactly the Debian packages Wisp needs to build, test and run its
# demo. Idempotent: packages already present are left alone and nothing is
# fetched when nothing is missing. Runs as root, or through sudo.
set -euo pipefail

packages=(
  build-essential cmake pkg-config          # toolchain
  libpaho-mqtt-dev libssl-dev               # MQTT (Paho MQTTAsync, TLS through OpenSSL)
  liblua5.4-dev lua-cjson-dev               # Lua 5.4 and its JSON module
  libcjson-dev                              # JSON in C (function.json, config)
  liblmdb-dev libmbedtls-dev libmicrohttpd-dev  # state store, signing, control plane API
  mosquitto mosquitto-clients openssl       # a real broker for tests and the quickstart
  clang libclang-rt-14-dev                  # the libFuzzer target (runtime is only recommended)
  dpkg-dev file adduser systemd             # the .deb (cpack + dpkg-shlibdeps) and its unit test
  curl jq                                   # the control plane tests talk to its HTTP API
)
if [ "${WISP_WITH_NODE:-0}" = 1 ]; then
  packages+=(nodejs npm)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
# The Debian mosquitto package starts a system broker on port 1883; Wisp's
# scripts always start their own on a free loopback port, so that one is
# not needed and is left as the package set it up.
