#!/usr/bin/env bash
# The Debian package, built and installed for real (needs root):
#
#  1. builds the .deb with cpack from this build dir into the test's temp dir
#     (or takes $WISP_DEB), and checks it with dpkg-deb: the file list, the
#     conffile, Depends against what wispd links and dlopen()s, Installed-Size
#     as dpkg computes it, stripped wispd + wisp under 1 MiB;
#  2. systemd-analyze verify on the unit (on the package's tree, and again
#     once installed);
#  3. dpkg -i: the user wisp, its directories and groups, the enabled unit;
#     wispd --help from /usr/bin; wispd run as the unit runs it (the user,
#     its groups, no_new_privs, ExecStart) against a private mosquitto, an
#     example function answering, SIGHUP reloading, SIGTERM exiting 0;
#  4. dpkg -i of the same .deb again (the upgrade path; an edited conffile and
#     the data survive), dpkg -r (data, config and user kept), dpkg -P (all
#     gone) and a comparison with the machine's state before the test;
#  5. the unit under a real systemd: with systemctl when systemd is PID 1;
#     otherwise in a throwaway systemd booted in private namespaces over a
#     tmpfs overlay of / (no change reaches the machine): the image overlay's
#     first boot installs the package with apt, wispd.service starts with all
#     its hardening, runs an example and reloads, stops cleanly, restarts after
#     a crash, and dpkg -P stops and removes it. WISP_TEST_CONTAINER=0 skips
#     the container; when namespaces or overlayfs are not available it is
#     skipped with the reason.
#
# Exit 77 (skipped) when not root, when a tool is missing, or when a wisp
# installation already exists (the test installs and purges the package and
# never touches an existing one). The EXIT trap purges whatever the test
# installed and removes the user, groups and directories it created, also
# after a failure.
set -euo pipefail
: "${WISP_SOURCE_DIR:?}" "${WISP_BUILD_DIR:?}"
# shellcheck source-path=SCRIPTDIR source=../lib/broker.sh
source "$WISP_SOURCE_DIR/tests/lib/broker.sh"

PKG=wisp
PKG_USER=wisp
UNIT=wispd.service
PKG_DATA=/var/lib/wisp
PKG_ETC=/etc/wisp
PKG_BINS=(/usr/bin/wispd /usr/bin/wisp)
PKG_GROUPS=(gpio i2c) # the unit's SupplementaryGroups=, created by postinst when missing
# shellcheck source-path=SCRIPTDIR source=../lib/debtest.sh
source "$WISP_SOURCE_DIR/tests/lib/debtest.sh"

# --- preconditions ---------------------------------------------------------------
deb_preconditions WISP_DEB dpkg dpkg-deb dpkg-query systemd-analyze setpriv mosquitto mosquitto_pub mosquitto_sub readelf getent
deb_machine_init

# --- 1. build and inspect the package ------------------------------------------------
if ! deb_from_env WISP_DEB; then
    deb_cpack
    debs=("$TEST_TMP"/cpack/wisp_*.deb)
    if [ ${#debs[@]} -ne 1 ] || [ ! -f "${debs[0]}" ]; then
        fail "cpack made no single wisp_*.deb: ${debs[*]}"
    fi
    deb=${debs[0]}
fi
deb_version_arch
deb_check_fields
[ "${deb##*/}" = "wisp_${version}_${arch}.deb" ] || fail "file name ${deb##*/}"

# Exactly these files, modes and owners.
dpkg-deb --contents "$deb" | awk '{print $1, $2, $6 ($7 ? " " $7 " " $8 : "")}' | sort >"$TEST_TMP/contents"
expect=(
    "-rw-r--r-- root/root ./etc/wisp/wispd.json"
    "drwxr-xr-x root/root ./etc/wisp/trust/"
    "-rw-r--r-- root/root ./lib/systemd/system/wispd.service"
    "-rwxr-xr-x root/root ./usr/bin/wispd"
    "-rwxr-xr-x root/root ./usr/bin/wisp"
    "-rw-r--r-- root/root ./usr/share/doc/wisp/copyright"
    "-rw-r--r-- root/root ./usr/share/doc/wisp/README"
    "-rw-r--r-- root/root ./usr/share/wisp/examples/gateway.json"
    "-rw-r--r-- root/root ./usr/share/wisp/examples/temp-alert/handler.lua"
    "-rw-r--r-- root/root ./usr/share/wisp/examples/csv-line/lib/csv.lua"
    "-rw-r--r-- root/root ./usr/share/wisp/examples/native-threshold/handler.so"
)
for e in "${expect[@]}"; do
    grep -qxF -- "$e" "$TEST_TMP/contents" || { cat "$TEST_TMP/contents" >&2; fail "not in the package: $e"; }
done
for d in "$WISP_SOURCE_DIR"/examples/*/; do
    n=$(basename "$d")
    grep -q " ./usr/share/wisp/examples/$n/function.json$" "$TEST_TMP/contents" || fail "example $n missing"
done
# Besides these, only /usr/lib/wisp/ (the provisioning program's place).
stray=$(grep -vE ' \./(etc/wisp/|lib/systemd/system/|usr/bin/|usr/lib/wisp/|usr/share/doc/wisp/|usr/share/wisp/examples/)' "$TEST_TMP/contents" |
    grep -vE '^d.* \./(etc|lib|lib/systemd|usr|usr/bin|usr/lib|usr/share|usr/share/doc|usr/share/wisp)?/?$' || true)
[ -z "$stray" ] || fail "unexpected entries in the package: $stray"
grep -q 'CMakeLists.txt' "$TEST_TMP/contents" && fail "a CMakeLists.txt is in the package"

# Control: the conffile and the maintainer scripts.
deb_check_control /etc/wisp/wispd.json

# The package's tree.
deb_unpack
for b in wispd wisp; do
    [ "$(readelf -S "$root/usr/bin/$b" | grep -c '\.symtab')" -eq 0 ] || fail "$b is not stripped"
done
bin_bytes=$(($(stat -c %s "$root/usr/bin/wispd") + $(stat -c %s "$root/usr/bin/wisp")))
[ "$bin_bytes" -le 1048576 ] || fail "wispd + wisp take $bin_bytes bytes, more than 1 MiB"

deb_check_installed_size

# Depends: the package of every library wispd and wisp link, and of the Paho
# libraries wispd dlopen()s (their sonames are strings in the binary).
deb_check_depends "$root/usr/bin/wispd" "$root/usr/bin/wispd" "$root/usr/bin/wisp"
deb_check_depends_on liblua5.4-0 lua-cjson liblmdb0 libcjson1 libmbedtls14 libmbedx509-1 libmbedcrypto7 libpaho-mqtt1.3 adduser
say "package: ${deb##*/}, $(stat -c %s "$deb") bytes, Installed-Size $kib KiB, wispd + wisp $bin_bytes bytes"
say "Depends: $depends"

# --- 2. the unit ---------------------------------------------------------------------
# systemd-analyze verify resolves ExecReload's /bin/kill under --root as well.
deb_verify_unit /bin/kill
unit=$root/lib/systemd/system/$UNIT
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
[ "$exec_start" = "/usr/bin/wispd --config /etc/wisp/wispd.json" ] || fail "ExecStart=$exec_start"
timeout_stop=$(sed -n 's/^TimeoutStopSec=//p' "$unit")
shutdown_ms=$(sed -n 's/.*"shutdown_timeout_ms": *\([0-9]*\).*/\1/p' "$root/etc/wisp/wispd.json")
[ $((timeout_stop * 1000)) -gt "${shutdown_ms:-10000}" ] || fail "TimeoutStopSec=$timeout_stop is not above shutdown_timeout_ms=$shutdown_ms"
read -ra unit_groups <<<"$(sed -n 's/^SupplementaryGroups=//p' "$unit")"
[ "${unit_groups[*]}" = "gpio i2c" ] || fail "SupplementaryGroups=${unit_groups[*]}"

# --- 3. install -----------------------------------------------------------------------
deb_install
deb_check_user
for g in "${unit_groups[@]}"; do
    getent group "$g" >/dev/null || fail "group $g (SupplementaryGroups=) does not exist; the unit would not start"
done
for d in /var/lib/wisp /var/lib/wisp/functions; do
    [ "$(stat -c '%U:%G %a' "$d")" = "wisp:wisp 750" ] || fail "$d: $(stat -c '%U:%G %a' "$d")"
done
[ "$(stat -c '%U:%G %a' /etc/wisp/trust)" = "root:root 755" ] || fail "/etc/wisp/trust: $(stat -c '%U:%G %a' /etc/wisp/trust)"
deb_check_installed_unit
/usr/bin/wispd --help >"$TEST_TMP/help" 2>&1 || fail "wispd --help failed: $(cat "$TEST_TMP/help")"
grep -q '^Usage: wispd' "$TEST_TMP/help" || fail "wispd --help: $(head -3 "$TEST_TMP/help")"
/usr/bin/wisp --help >/dev/null 2>&1 || fail "wisp --help failed"

if deb_systemd_here; then
    # systemd is PID 1: postinst started the service with the packaged config
    # (its broker need not be there: wispd starts offline). Stopped again
    # before the run below, which uses the same data directory.
    wait_for 20 "wispd.service active" bash -c "[ \"\$(systemctl is-active $UNIT)\" = active ]" ||
        { systemctl status $UNIT --no-pager >&2 || true; fail "$UNIT did not become active"; }
    systemctl reload $UNIT || fail "systemctl reload failed"
    systemctl stop $UNIT || fail "systemctl stop failed"
    [ "$(systemctl show -p ExecMainStatus --value $UNIT)" = 0 ] || fail "wispd.service did not exit 0 on stop"
    say "systemd is PID 1: $UNIT became active, reloaded and stopped cleanly"
fi

# Run wispd as the unit does: user wisp, group wisp plus the supplementary
# groups, no capabilities, no_new_privs, its ExecStart, / as the working
# directory. Only the broker is this test's private one.
# shellcheck disable=SC2119 # no extra mosquitto.conf lines
broker_start
cp -r /usr/share/wisp/examples/temp-alert /var/lib/wisp/functions/
chown -R wisp:wisp /var/lib/wisp/functions
group_ids=$(for g in "${unit_groups[@]}"; do getent group "$g" | cut -d: -f3; done | paste -sd,)
wispd_log=$TEST_TMP/wispd.log
read -ra cmd <<<"$exec_start"
(cd / && exec setpriv --reuid=wisp --regid=wisp --groups="$group_ids" --inh-caps=-all --bounding-set=-all \
    --no-new-privs -- "${cmd[@]}" --broker "$BROKER_URI") >"$wispd_log" 2>&1 &
DEB_PID=$!
# shellcheck disable=SC2317 # run through wait_for
ready_or_gone() { grep -q 'msg="ready' "$wispd_log" || ! kill -0 "$DEB_PID" 2>/dev/null; }
wait_for 20 "wispd ready" ready_or_gone || true
grep -q 'msg="ready' "$wispd_log" || { cat "$wispd_log" >&2; fail "wispd did not become ready"; }
[ "$(ps -o user= -p "$DEB_PID")" = wisp ] || fail "wispd runs as $(ps -o user= -p "$DEB_PID")"
grep -q "functions /var/lib/wisp/functions" "$wispd_log" || fail "wispd did not take the functions folder from /etc/wisp/wispd.json"
mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -t 'alerts/#' -t 'readings/#' -v >"$TEST_TMP/sub.out" &
track_pid $!
wait_for 10 "subscriber" bash -c "mosquitto_pub -h 127.0.0.1 -p $BROKER_PORT -t readings/probe -m p; grep -q '^readings/probe ' '$TEST_TMP/sub.out'" ||
    fail "subscriber did not come up"
mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -q 1 -t sensors/kitchen/temp -m '{"dev": "kitchen", "temp": 35.5}'
wait_for 10 "the alert" grep -q '^alerts/kitchen {.*"temp":35.5' "$TEST_TMP/sub.out" ||
    { cat "$wispd_log" >&2; fail "temp-alert did not answer"; }
# SIGHUP (the unit's ExecReload) picks up a new function.
cp -r /usr/share/wisp/examples/unit-convert /var/lib/wisp/functions/
chown -R wisp:wisp /var/lib/wisp/functions
kill -HUP "$DEB_PID"
wait_for 10 "reload" grep -q 'reloaded /var/lib/wisp/functions: 2 function' "$wispd_log" || fail "SIGHUP did not reload"
mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -q 1 -t sensors/hall/temp -m '{"dev": "hall", "temp": 20}'
wait_for 10 "unit-convert" grep -q '^readings/hall/temp .*"f":68' "$TEST_TMP/sub.out" || fail "unit-convert did not answer after the reload"
grep -q 'executor confinement unavailable' "$wispd_log" && fail "executors ran unconfined: $(grep confinement "$wispd_log")"
# SIGTERM (the unit's KillSignal): drained, exit 0.
deb_stop wispd "$wispd_log"
[ "$(stat -c %U /var/lib/wisp/store)" = wisp ] || fail "the store is not owned by wisp"
say "wispd as user wisp (groups ${unit_groups[*]}, no_new_privs): example answered, SIGHUP reloaded, SIGTERM exit 0"

# --- 4. upgrade (the same .deb again), remove, purge ----------------------------------
sed -i 's/"log_level": "info"/"log_level": "debug"/' /etc/wisp/wispd.json
deb_reinstall
grep -q '"log_level": "debug"' /etc/wisp/wispd.json || fail "the edited conffile was replaced"
[ -f /var/lib/wisp/functions/temp-alert/function.json ] || fail "the functions were lost"
[ -d /var/lib/wisp/store ] || fail "the store was lost"
if [ -f /etc/wisp/.created-groups ]; then
    [ "$(sort /etc/wisp/.created-groups | uniq -d)" = "" ] || fail "postinst recorded a group twice"
fi

deb_remove
if [ -e /usr/bin/wispd ] || [ -e "/lib/systemd/system/$UNIT" ]; then
    fail "dpkg -r left the binaries or the unit"
fi
if [ ! -d /var/lib/wisp/store ] || [ ! -f /var/lib/wisp/functions/temp-alert/handler.lua ]; then
    fail "dpkg -r deleted the data"
fi
[ -f /etc/wisp/wispd.json ] || fail "dpkg -r deleted the conffile"
getent passwd wisp >/dev/null || fail "dpkg -r deleted the user"

deb_purge
say "upgrade kept config and data; dpkg -r kept data, config and user; dpkg -P left the machine as before"

# --- 5. the unit under systemd, in a throwaway container --------------------------------
# (debtest.sh's container_start: overlay of /, private namespaces.) The image
# overlay's first boot unit installs the package there with apt.
[ "$systemd_here" = 0 ] || pass
container_start "wisp-test-deb-$$" "wisp package test" wisp-firstboot.service <<EOF
# The image overlay, as make-overlay.sh applies it to a Raspberry Pi OS root.
"$WISP_SOURCE_DIR/firmware/make-overlay.sh" --deb "$deb" --rootfs "\$R"
EOF

# First boot: the overlay's unit installed the package with apt and disabled itself.
wait_for 120 "wisp-firstboot to finish" bash -c "[ \"\$(nsenter -t $CT_PID1 -m -u -i -n -p -- systemctl is-enabled wisp-firstboot.service 2>/dev/null)\" = disabled ]" ||
    ct_fail "wisp-firstboot.service did not finish: $(ct systemctl status wisp-firstboot.service --no-pager 2>&1 | tail -5)"
[ "$(ct systemctl show -p Result --value wisp-firstboot.service)" = success ] || ct_fail "wisp-firstboot.service failed"
[ "$(ct dpkg-query -W -f="\${db:Status-Abbrev}" wisp)" = "ii " ] || ct_fail "first boot did not install wisp"
ct journalctl -u wisp-firstboot.service -o cat --no-pager >"$TEST_TMP/firstboot.journal"
grep -q 'provisioning: /usr/lib/wisp/provision --owner wisp' "$TEST_TMP/firstboot.journal" ||
    ct_fail "first boot did not reach the provisioning step"
wait_for 20 "wispd.service active" ct_active || ct_fail "$UNIT is not active after the first boot"
[ "$(ct systemctl is-enabled $UNIT)" = enabled ] || ct_fail "$UNIT is not enabled"
say "container: first boot installed the package with apt, disabled itself; $UNIT active"

# The broker by name: resolving under RestrictAddressFamilies= works.
ct sed -i 's#"tcp://127.0.0.1:1883"#"tcp://localhost:1883"#' /etc/wisp/wispd.json
ct systemctl restart $UNIT || ct_fail "systemctl restart failed"
wait_for 20 "wispd connected to localhost" bash -c "nsenter -t $CT_PID1 -m -u -i -n -p -- journalctl -u $UNIT -o cat --no-pager | grep -q 'connected to localhost:1883'" ||
    ct_fail "wispd did not connect to the broker tcp://localhost:1883"

# The service as systemd runs it: user, groups, no_new_privs, seccomp.
main=$(ct systemctl show -p MainPID --value $UNIT)
ct_check_hardened "$main" wispd
main_groups=" $(ct_status "$main" | sed -n 's/^Groups:\s*//p') "
for g in "${unit_groups[@]}"; do
    gid=$(ct getent group "$g" | cut -d: -f3)
    [[ $main_groups == *" $gid "* ]] || ct_fail "wispd is not in group $g ($gid): Groups:$main_groups"
done
ct cp -r /usr/share/wisp/examples/temp-alert /usr/share/wisp/examples/native-threshold /var/lib/wisp/functions/
ct chown -R wisp:wisp /var/lib/wisp/functions
ct systemctl reload $UNIT || ct_fail "systemctl reload failed"
wait_for 10 "reload" bash -c "nsenter -t $CT_PID1 -m -u -i -n -p -- journalctl -u $UNIT -o cat --no-pager | grep -q 'reloaded /var/lib/wisp/functions: 2 function'" ||
    ct_fail "ExecReload did not reload the functions"
ct bash -c 'mosquitto_sub -t "alerts/#" -v -C 2 -W 15 >/run/sub.out 2>&1 & sleep 0.5
    mosquitto_pub -q 1 -t sensors/kitchen/temp -m "{\"dev\": \"kitchen\", \"temp\": 35.5}"
    mosquitto_pub -q 1 -t sensors/hall/humidity -m 60
    wait' || true
ct grep -q '^alerts/kitchen {.*"temp":35.5' /run/sub.out || ct_fail "temp-alert did not answer: $(ct cat /run/sub.out)"
ct grep -q '^alerts/hall/humidity ' /run/sub.out || ct_fail "native-threshold did not answer: $(ct cat /run/sub.out)"
# The executors stack their own filter on systemd's, and none runs unconfined.
for p in $(ct pgrep -u wisp -f /usr/bin/wispd); do
    [ "$p" = "$main" ] && continue
    n_main=$(ct_status "$main" | awk '/^Seccomp_filters:/ {print $2}')
    n=$(ct_status "$p" | awk '/^Seccomp_filters:/ {print $2}')
    [ -n "$n" ] || ct_fail "no Seccomp_filters line for process $p"
    [ "$n" -ge "$n_main" ] || ct_fail "process $p has fewer seccomp filters ($n) than wispd ($n_main)"
done
ct journalctl -u $UNIT -o cat --no-pager >"$TEST_TMP/wispd.journal"
grep -qiE 'confinement unavailable|Operation not permitted' "$TEST_TMP/wispd.journal" &&
    ct_fail "wispd logged a refusal under the unit's sandbox"
# Stop drains and exits 0; a crash is restarted.
ct systemctl stop $UNIT
[ "$(ct systemctl show -p ExecMainStatus --value $UNIT)" = 0 ] || ct_fail "wispd did not exit 0 on stop"
ct journalctl -u $UNIT -o cat --no-pager >"$TEST_TMP/wispd.journal"
grep -q 'msg="stopped"' "$TEST_TMP/wispd.journal" || ct_fail "wispd did not log its clean stop"
ct systemctl start $UNIT
ct systemctl kill -s KILL --kill-whom=main $UNIT
wait_for 15 "restart after a crash" bash -c "[ \"\$(nsenter -t $CT_PID1 -m -u -i -n -p -- systemctl show -p NRestarts --value $UNIT)\" -ge 1 ] && [ \"\$(nsenter -t $CT_PID1 -m -u -i -n -p -- systemctl is-active $UNIT)\" = active ]" ||
    ct_fail "Restart=on-failure did not restart wispd"
say "container: hardened $UNIT ran Lua and native examples, reloaded, stopped with exit 0, restarted after SIGKILL"
say "container: systemd-analyze security: $(ct systemd-analyze security $UNIT --no-pager 2>/dev/null | tail -1 | sed 's/^[^O]*Overall/Overall/')"
# Purge with systemd running: prerm stops the service, postrm cleans up.
ct_purge
container_stop
pass
