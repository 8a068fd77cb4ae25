#!/usr/bin/env bash
# The Debian package wisp-cloud (the control plane), built and installed for
# real (needs root):
#
#  1. cpack from this build dir makes exactly wisp_<v>_<arch>.deb and
#     wisp-cloud_<v>_<arch>.deb (or takes $WISP_CLOUD_DEB); wisp-cloud's file
#     list, conffile, maintainer scripts, Depends against what wisp-cloud links
#     and dlopen()s, Installed-Size, a stripped binary; wisp-cloud is not in
#     the wisp package;
#  2. systemd-analyze verify on wisp-cloud.service (package tree, installed);
#  3. dpkg -i: the user wisp-cloud, /var/lib/wisp-cloud, the generated token
#     (root:wisp-cloud 0640, 32 hex digits), the enabled unit; the unit's
#     ExecStart with the variables of its EnvironmentFile, run as the unit
#     runs it (user, no capabilities, no_new_privs) against a private
#     mosquitto: GET /v1/health with the token, the token guarding the API,
#     SIGTERM exiting 0;
#  4. dpkg -i again (upgrade path: token, edited conffile and data kept),
#     dpkg -r (data, config, token, user kept), dpkg -P (all gone, the machine
#     as before the test);
#  5. the unit under a real systemd: with systemctl when systemd is PID 1,
#     otherwise in a throwaway systemd booted in private namespaces over a
#     tmpfs overlay of / (as deb_package.sh does; WISP_TEST_CONTAINER=0 skips
#     it): dpkg -i starts wisp-cloud.service with all its hardening, it
#     connects to the container's broker and answers on 127.0.0.1:8080, stops
#     with exit 0, restarts after a crash; dpkg -P stops and removes it.
#
# Exit 77 (skipped) when not root, when a tool is missing, or when a
# wisp-cloud installation (package, user, /var/lib/wisp-cloud, /etc/wisp-cloud)
# exists. The EXIT trap purges what the test installed, also after a failure.
set -euo pipefail
: "${WISP_SOURCE_DIR:?}" "${WISP_BUILD_DIR:?}"
# shellcheck source-path=SCRIPTDIR source=../lib/broker.sh
source "$WISP_SOURCE_DIR/tests/lib/broker.sh"

PKG=wisp-cloud
PKG_USER=wisp-cloud
UNIT=wisp-cloud.service
PKG_ETC=/etc/wisp-cloud
PKG_DATA=/var/lib/wisp-cloud
PKG_BINS=(/usr/bin/wisp-cloud)
# shellcheck source-path=SCRIPTDIR source=../lib/debtest.sh
source "$WISP_SOURCE_DIR/tests/lib/debtest.sh"

# --- preconditions ---------------------------------------------------------------
deb_preconditions WISP_CLOUD_DEB dpkg dpkg-deb dpkg-query systemd-analyze setpriv mosquitto curl readelf getent ldconfig
deb_machine_init

# --- 1. build and inspect the packages --------------------------------------------------
deb_version_arch
wisp_deb=
if ! deb_from_env WISP_CLOUD_DEB; then
    deb_cpack
    made=$(cd "$TEST_TMP/cpack" && printf '%s\n' *.deb | sort | paste -sd' ')
    [ "$made" = "wisp-cloud_${version}_${arch}.deb wisp_${version}_${arch}.deb" ] ||
        fail "cpack made: $made (expected wisp_${version}_${arch}.deb and wisp-cloud_${version}_${arch}.deb)"
    deb=$TEST_TMP/cpack/wisp-cloud_${version}_${arch}.deb
    wisp_deb=$TEST_TMP/cpack/wisp_${version}_${arch}.deb
fi
deb_check_fields
summary=$(field Description | sed -n 1p)
[[ $summary == *"control plane"* ]] || fail "Description does not say what it is: $summary"
if [ -n "$wisp_deb" ]; then
    [ "$(dpkg-deb --field "$wisp_deb" Package)" = wisp ] || fail "wisp_*.deb is package $(dpkg-deb --field "$wisp_deb" Package)"
    dpkg-deb --contents "$wisp_deb" | grep -q 'wisp-cloud' && fail "the wisp package has wisp-cloud files"
fi

# Exactly these files (and their directories), modes and owners.
dpkg-deb --contents "$deb" | awk '{print $1, $2, $6}' | sort >"$TEST_TMP/contents"
expect=(
    "-rw-r--r-- root/root ./etc/wisp-cloud/wisp-cloud.env"
    "-rw-r--r-- root/root ./lib/systemd/system/wisp-cloud.service"
    "-rwxr-xr-x root/root ./usr/bin/wisp-cloud"
    "-rw-r--r-- root/root ./usr/share/doc/wisp-cloud/README"
    "-rw-r--r-- root/root ./usr/share/doc/wisp-cloud/copyright"
)
grep -v '^d' "$TEST_TMP/contents" >"$TEST_TMP/files"
printf '%s\n' "${expect[@]}" | sort | diff -u - "$TEST_TMP/files" >&2 || fail "the package's files differ (above)"
stray=$(grep '^d' "$TEST_TMP/contents" | awk '{print $3}' |
    grep -vxE '\./(etc/|etc/wisp-cloud/|lib/|lib/systemd/|lib/systemd/system/|usr/|usr/bin/|usr/share/|usr/share/doc/|usr/share/doc/wisp-cloud/)?' || true)
[ -z "$stray" ] || fail "unexpected directories in the package: $stray"

deb_check_control $PKG_ETC/wisp-cloud.env
for s in postinst prerm postrm; do
    grep -qx 'set -e' "$TEST_TMP/control/$s" || fail "$s lacks set -e"
    cmp -s "$TEST_TMP/control/$s" "$WISP_SOURCE_DIR/firmware/debian-cloud/$s" || fail "$s is not firmware/debian-cloud/$s"
done

deb_unpack
bin=$root/usr/bin/wisp-cloud
[ "$(readelf -S "$bin" | grep -c '\.symtab')" -eq 0 ] || fail "wisp-cloud is not stripped"
bin_bytes=$(stat -c %s "$bin")
deb_check_installed_size

# Depends: the package of every library wisp-cloud links and of the Paho
# library its MQTT client dlopen()s.
deb_check_depends "$bin" "$bin"
deb_check_depends_on libmicrohttpd12 liblmdb0 libcjson1 libmbedcrypto7 libpaho-mqtt1.3 adduser
say "package: ${deb##*/}, $(stat -c %s "$deb") bytes, Installed-Size $kib KiB, wisp-cloud $bin_bytes bytes"
say "Depends: $depends"
[ -z "$wisp_deb" ] || say "also made: ${wisp_deb##*/}, $(stat -c %s "$wisp_deb") bytes, Installed-Size $(dpkg-deb --field "$wisp_deb" Installed-Size) KiB"

# --- 2. the unit ---------------------------------------------------------------------
# shellcheck disable=SC2119 # no host files beyond the units
deb_verify_unit
unit=$root/lib/systemd/system/$UNIT
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
# shellcheck disable=SC2016 # systemd's ${VAR}, literally
[ "$exec_start" = '/usr/bin/wisp-cloud --broker ${WISP_CLOUD_BROKER} --listen ${WISP_CLOUD_LISTEN} --data /var/lib/wisp-cloud --token-file /etc/wisp-cloud/token' ] ||
    fail "ExecStart=$exec_start"
[ "$(sed -n 's/^EnvironmentFile=//p' "$unit")" = $PKG_ETC/wisp-cloud.env ] || fail "EnvironmentFile= is not $PKG_ETC/wisp-cloud.env"
grep -qx 'WISP_CLOUD_BROKER=tcp://127.0.0.1:1883' "$root$PKG_ETC/wisp-cloud.env" || fail "wisp-cloud.env: no default broker"
grep -qx 'WISP_CLOUD_LISTEN=127.0.0.1:8080' "$root$PKG_ETC/wisp-cloud.env" || fail "wisp-cloud.env: no default listen address"
for line in User=$PKG_USER Group=$PKG_USER CapabilityBoundingSet= ProtectSystem=strict StateDirectory=wisp-cloud \
    ReadWritePaths=$PKG_DATA PrivateTmp=yes 'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6' \
    SystemCallFilter=@system-service MemoryDenyWriteExecute=yes Restart=on-failure StandardError=journal; do
    grep -qxF -- "$line" "$unit" || fail "the unit lacks $line"
done

# --- 3. install -----------------------------------------------------------------------
deb_install
deb_check_user
[ "$(stat -c '%U:%G %a' $PKG_DATA)" = "$PKG_USER:$PKG_USER 750" ] || fail "$PKG_DATA: $(stat -c '%U:%G %a' $PKG_DATA)"
[ "$(stat -c '%U:%G %a' $PKG_ETC/token)" = "root:$PKG_USER 640" ] || fail "$PKG_ETC/token: $(stat -c '%U:%G %a' $PKG_ETC/token)"
token=$(cat $PKG_ETC/token)
[[ $token =~ ^[0-9a-f]{32}$ ]] || fail "the token is not 32 hex digits: '$token'"
[ "$(wc -l <$PKG_ETC/token)" = 1 ] || fail "the token file is not one line"
deb_check_installed_unit

if deb_systemd_here; then
    wait_for 20 "$UNIT active" bash -c "[ \"\$(systemctl is-active $UNIT)\" = active ]" ||
        { systemctl status $UNIT --no-pager >&2 || true; fail "$UNIT did not become active"; }
    curl -sf -H "Authorization: Bearer $token" http://127.0.0.1:8080/v1/health | grep -q '"ok":true' ||
        fail "$UNIT does not answer on 127.0.0.1:8080"
    systemctl stop $UNIT || fail "systemctl stop failed"
    [ "$(systemctl show -p ExecMainStatus --value $UNIT)" = 0 ] || fail "$UNIT did not exit 0 on stop"
    say "systemd is PID 1: $UNIT became active, answered and stopped cleanly"
fi

# The unit's command line as systemd runs it: the variables from its
# EnvironmentFile (edited to point at this test's broker and a free port:
# the conffile edit is also what the upgrade below must keep), user and group
# wisp-cloud, no capabilities, no_new_privs, / as the working directory.
# shellcheck disable=SC2119 # no extra mosquitto.conf lines
broker_start
sed -i -e "s#^WISP_CLOUD_BROKER=.*#WISP_CLOUD_BROKER=$BROKER_URI#" \
    -e 's#^WISP_CLOUD_LISTEN=.*#WISP_CLOUD_LISTEN=127.0.0.1:0#' $PKG_ETC/wisp-cloud.env
env_value() { sed -n "s/^$1=//p" $PKG_ETC/wisp-cloud.env | tail -1; }
read -ra cmd <<<"$exec_start"
for i in "${!cmd[@]}"; do
    if [[ ${cmd[$i]} =~ ^\$\{([A-Z_]+)\}$ ]]; then
        cmd[i]=$(env_value "${BASH_REMATCH[1]}")
        [ -n "${cmd[$i]}" ] || fail "${BASH_REMATCH[1]} is not set in $PKG_ETC/wisp-cloud.env"
    fi
done
cloud_log=$TEST_TMP/wisp-cloud.log
(cd / && exec setpriv --reuid=$PKG_USER --regid=$PKG_USER --clear-groups --inh-caps=-all --bounding-set=-all \
    --no-new-privs -- env -i "${cmd[@]}") >"$cloud_log" 2>&1 &
DEB_PID=$!
# shellcheck disable=SC2317 # run through wait_for
port_or_gone() { [ -s "$PKG_DATA/http.port" ] || ! kill -0 "$DEB_PID" 2>/dev/null; }
wait_for 20 "wisp-cloud listening" port_or_gone || true
[ -s $PKG_DATA/http.port ] || { cat "$cloud_log" >&2; fail "wisp-cloud did not write $PKG_DATA/http.port"; }
[ "$(ps -o user= -p "$DEB_PID")" = $PKG_USER ] || fail "wisp-cloud runs as $(ps -o user= -p "$DEB_PID")"
http=http://127.0.0.1:$(cat $PKG_DATA/http.port)
# shellcheck disable=SC2317 # run through wait_for
health_connected() { curl -sf -H "Authorization: Bearer $token" "$http/v1/health" | grep -q '"mqtt":"connected"'; }
wait_for 20 "wisp-cloud connected to the broker" health_connected ||
    { cat "$cloud_log" >&2; fail "GET /v1/health: $(curl -s -H "Authorization: Bearer $token" "$http/v1/health")"; }
curl -sf -H "Authorization: Bearer $token" "$http/v1/health" | grep -q '"ok":true' || fail "health is not ok"
# The API takes exactly the token of /etc/wisp-cloud/token.
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$http/v1/devices")
[ "$code" = 200 ] || fail "GET /v1/devices with the token: HTTP $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer x$token" "$http/v1/devices")
[ "$code" = 401 ] || fail "GET /v1/devices with a wrong token: HTTP $code"
[ "$(stat -c %U $PKG_DATA/db)" = $PKG_USER ] || fail "the store is not owned by $PKG_USER"
deb_stop wisp-cloud "$cloud_log"
say "ExecStart as user $PKG_USER (EnvironmentFile variables, no_new_privs): /v1/health answered with the token, SIGTERM exit 0"

# --- 4. upgrade (the same .deb again), remove, purge ----------------------------------
deb_reinstall
[ "$(cat $PKG_ETC/token)" = "$token" ] || fail "the token was replaced"
[ "$(stat -c '%U:%G %a' $PKG_ETC/token)" = "root:$PKG_USER 640" ] || fail "$PKG_ETC/token after the upgrade: $(stat -c '%U:%G %a' $PKG_ETC/token)"
grep -qx "WISP_CLOUD_BROKER=$BROKER_URI" $PKG_ETC/wisp-cloud.env || fail "the edited conffile was replaced"
[ -d $PKG_DATA/db ] || fail "the store was lost"

deb_remove
if [ -e /usr/bin/wisp-cloud ] || [ -e /lib/systemd/system/$UNIT ]; then
    fail "dpkg -r left the binary or the unit"
fi
[ -d $PKG_DATA/db ] || fail "dpkg -r deleted the data"
[ "$(cat $PKG_ETC/token)" = "$token" ] || fail "dpkg -r deleted or changed the token"
[ -f $PKG_ETC/wisp-cloud.env ] || fail "dpkg -r deleted the conffile"
getent passwd $PKG_USER >/dev/null || fail "dpkg -r deleted the user"

deb_purge
say "upgrade kept token, config and data; dpkg -r kept them and the user; dpkg -P left the machine as before"

# --- 5. the unit under systemd, in a throwaway container --------------------------------
# As in deb_package.sh (debtest.sh's container_start), but the package is
# installed there with dpkg -i while systemd runs.
[ "$systemd_here" = 0 ] || pass
container_start "wisp-test-cloud-$$" "wisp-cloud package test" <<EOF
install -D -m 0644 "$deb" "\$R/var/cache/wisp-test/$PKG.deb"
EOF
# shellcheck disable=SC2317 # run through wait_for
ct_health() {
    ct curl -sf -H "Authorization: Bearer $(ct cat "$PKG_ETC/token")" http://127.0.0.1:8080/v1/health | grep -q '"mqtt":"connected"'
}

ct dpkg -i /var/cache/wisp-test/$PKG.deb >"$TEST_TMP/ct-dpkg-i.log" 2>&1 || { cat "$TEST_TMP/ct-dpkg-i.log" >&2; ct_fail "dpkg -i failed"; }
wait_for 20 "$UNIT active" ct_active || ct_fail "postinst did not start $UNIT"
[ "$(ct systemctl is-enabled $UNIT)" = enabled ] || ct_fail "$UNIT is not enabled"
wait_for 20 "wisp-cloud connected, answering on 127.0.0.1:8080" ct_health ||
    ct_fail "GET /v1/health on 127.0.0.1:8080 (the packaged settings) did not answer connected"
[ "$(ct cat $PKG_DATA/http.port)" = 8080 ] || ct_fail "$PKG_DATA/http.port: $(ct cat $PKG_DATA/http.port)"
main=$(ct systemctl show -p MainPID --value $UNIT)
ct_check_hardened "$main" wisp-cloud
ct journalctl -u $UNIT -o cat --no-pager >"$TEST_TMP/cloud.journal"
grep -qiE 'Operation not permitted|Permission denied|Read-only file system' "$TEST_TMP/cloud.journal" &&
    ct_fail "wisp-cloud logged a refusal under the unit's sandbox: $(grep -iE 'not permitted|denied|read-only' "$TEST_TMP/cloud.journal")"
ct systemctl stop $UNIT
[ "$(ct systemctl show -p ExecMainStatus --value $UNIT)" = 0 ] || ct_fail "wisp-cloud did not exit 0 on stop"
ct systemctl start $UNIT
ct systemctl kill -s KILL --kill-whom=main $UNIT
wait_for 15 "restart after a crash" bash -c "[ \"\$(nsenter -t $CT_PID1 -m -u -i -n -p -- systemctl show -p NRestarts --value $UNIT)\" -ge 1 ]" ||
    ct_fail "Restart=on-failure did not restart wisp-cloud"
wait_for 20 "wisp-cloud answering after the restart" ct_health || ct_fail "no answer after the restart"
say "container: hardened $UNIT answered with the packaged settings, stopped with exit 0, restarted after SIGKILL"
say "container: systemd-analyze security: $(ct systemd-analyze security $UNIT --no-pager 2>/dev/null | tail -1 | sed 's/^[^O]*Overall/Overall/')"
ct_purge
container_stop
pass
