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

me=${0##*/}
say() { echo "$me: $*"; }
skip() {
    echo "SKIP: $me: $*"
    exit 77
}

# --- preconditions ---------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || skip "needs root: it installs the package with dpkg -i and creates a system user (run ctest as root)"
for tool in dpkg dpkg-deb dpkg-query systemd-analyze setpriv mosquitto mosquitto_pub mosquitto_sub readelf getent; do
    command -v "$tool" >/dev/null || skip "$tool is not installed"
done
[ -n "${WISP_DEB:-}" ] || command -v cpack >/dev/null || skip "cpack is not installed (or set WISP_DEB to a built package)"
status=$(dpkg-query -W -f='${db:Status-Status}' wisp 2>/dev/null || true)
[ -z "$status" ] || [ "$status" = not-installed ] ||
    skip "the package wisp is on this machine ($status); the test would purge it"
for what in /var/lib/wisp /etc/wisp; do
    [ ! -e "$what" ] || skip "$what exists; the test would delete it"
done
getent passwd wisp >/dev/null && skip "a user wisp exists; the test would delete it"
getent group wisp >/dev/null && skip "a group wisp exists; the test would delete it"

# What the package may change, before it is installed: compared after purge.
UNIT=wispd.service
snapshot() {
    getent passwd | cut -d: -f1 | sort
    echo --
    getent group | cut -d: -f1 | sort
    echo --
    find /etc/systemd/system /var/lib/systemd/deb-systemd-helper-enabled \
        /var/lib/systemd/deb-systemd-helper-masked -name '*wisp*' 2>/dev/null | sort || true
    ls -d /var/lib/wisp /etc/wisp /lib/systemd/system/wispd.service /usr/bin/wispd /usr/bin/wisp 2>/dev/null || true
}
pre_groups=()
for g in gpio i2c; do
    getent group "$g" >/dev/null && pre_groups+=("$g")
done

test_tmp_init
snapshot >"$TEST_TMP/before"
WISPD_PID=
CT_UNSHARE=
CT_CGROUP=

# Stops the throwaway systemd container of step 5, if one runs, and removes
# its cgroup.
# shellcheck disable=SC2317 # also run by the EXIT trap
container_stop() {
    [ -n "$CT_UNSHARE" ] || return 0
    local pid1
    pid1=$(pgrep -P "$CT_UNSHARE" 2>/dev/null | head -1 || true)
    if [ -n "$pid1" ]; then
        kill -s RTMIN+4 "$pid1" 2>/dev/null || true # systemd: power off
        for _ in $(seq 100); do
            kill -0 "$CT_UNSHARE" 2>/dev/null || break
            sleep 0.1
        done
        # The end of PID 1 ends every process of its namespace.
        kill -KILL "$pid1" 2>/dev/null || true
    fi
    wait "$CT_UNSHARE" 2>/dev/null || true
    CT_UNSHARE=
    if [ -n "$CT_CGROUP" ] && [ -d "$CT_CGROUP" ]; then
        find "$CT_CGROUP" -depth -type d -exec rmdir {} + 2>/dev/null ||
            echo "$me: cleanup: could not remove the cgroup $CT_CGROUP" >&2
    fi
    CT_CGROUP=
}

# Restores the machine: stops what the test started, purges the package,
# deletes the user, groups and directories it created. Then the usual
# cleanup of broker.sh (the broker, $TEST_TMP).
# shellcheck disable=SC2317 # run by the EXIT trap
restore_machine() {
    local rc=$? g
    set +e # best effort: every step runs, whatever failed before
    [ -z "$WISPD_PID" ] || stop_pid "$WISPD_PID" 15
    container_stop
    status=$(dpkg-query -W -f='${db:Status-Status}' wisp 2>/dev/null || true)
    if [ -n "$status" ] && [ "$status" != not-installed ]; then
        echo "$me: cleanup: purging the package ($status)" >&2
        dpkg --purge wisp >/dev/null 2>&1 || echo "$me: cleanup: dpkg --purge wisp failed" >&2
    fi
    getent passwd wisp >/dev/null && { userdel wisp || true; }
    getent group wisp >/dev/null && { groupdel wisp || true; }
    for g in gpio i2c; do
        if getent group "$g" >/dev/null && [[ " ${pre_groups[*]} " != *" $g "* ]]; then
            groupdel "$g" || true
        fi
    done
    rm -rf /var/lib/wisp /etc/wisp
    rm -f "/etc/systemd/system/multi-user.target.wants/$UNIT" "/etc/systemd/system/$UNIT" \
        "/var/lib/systemd/deb-systemd-helper-enabled/$UNIT.dsh-also" \
        "/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/$UNIT" \
        "/var/lib/systemd/deb-systemd-helper-masked/$UNIT"
    (exit "$rc")
    test_cleanup
}
trap restore_machine EXIT

# --- 1. build and inspect the package ------------------------------------------------
if [ -n "${WISP_DEB:-}" ]; then
    deb=$WISP_DEB
    [ -f "$deb" ] || fail "WISP_DEB=$deb: no such file"
else
    say "cpack in $WISP_BUILD_DIR (output in the test's temp dir)"
    cpack -G DEB --config "$WISP_BUILD_DIR/CPackConfig.cmake" -B "$TEST_TMP/cpack" >"$TEST_TMP/cpack.log" 2>&1 ||
        { cat "$TEST_TMP/cpack.log" >&2; fail "cpack failed"; }
    debs=("$TEST_TMP"/cpack/wisp_*.deb)
    if [ ${#debs[@]} -ne 1 ] || [ ! -f "${debs[0]}" ]; then
        fail "cpack made no single wisp_*.deb: ${debs[*]}"
    fi
    deb=${debs[0]}
fi
field() { dpkg-deb --field "$deb" "$1"; }
arch=$(dpkg --print-architecture)
version=${WISP_VERSION:-$(sed -n 's/^project(wisp VERSION \([0-9.]*\).*/\1/p' "$WISP_SOURCE_DIR/CMakeLists.txt")}
[ "$(field Package)" = wisp ] || fail "Package: $(field Package)"
[ "$(field Version)" = "$version" ] || fail "Version: $(field Version), project version $version"
[ "$(field Architecture)" = "$arch" ] || fail "Architecture: $(field Architecture), this machine is $arch"
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
dpkg-deb --control "$deb" "$TEST_TMP/control"
[ "$(cat "$TEST_TMP/control/conffiles")" = /etc/wisp/wispd.json ] || fail "conffiles: $(cat "$TEST_TMP/control/conffiles")"
for s in postinst prerm postrm; do
    [ -x "$TEST_TMP/control/$s" ] || fail "$s is missing or not executable"
    sh -n "$TEST_TMP/control/$s" || fail "$s: syntax error"
    head -1 "$TEST_TMP/control/$s" | grep -qx '#!/bin/sh' || fail "$s is not a POSIX sh script"
done

# The package's tree.
root=$TEST_TMP/root
dpkg-deb -x "$deb" "$root"
for b in wispd wisp; do
    [ "$(readelf -S "$root/usr/bin/$b" | grep -c '\.symtab')" -eq 0 ] || fail "$b is not stripped"
done
bin_bytes=$(($(stat -c %s "$root/usr/bin/wispd") + $(stat -c %s "$root/usr/bin/wisp")))
[ "$bin_bytes" -le 1048576 ] || fail "wispd + wisp take $bin_bytes bytes, more than 1 MiB"

# Installed-Size: every file in KiB rounded up, 1 per directory (dpkg-gencontrol's rule).
kib=$(find "$root" -printf '%y %s\n' | awk '$1 == "f" || $1 == "l" {k += int(($2 + 1023) / 1024); next} {k += 1} END {print k}')
[ "$(field Installed-Size)" = "$kib" ] || fail "Installed-Size $(field Installed-Size), the files take $kib KiB"

# Depends: the package of every library wispd and wisp link, and of the Paho
# libraries wispd dlopen()s (their sonames are strings in the binary).
depends=$(field Depends)
sonames=$(readelf -d "$root/usr/bin/wispd" "$root/usr/bin/wisp" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort -u)
dlopened=$(grep -aoE 'libpaho-mqtt3as?\.so\.[0-9]+' "$root/usr/bin/wispd" | sort -u)
[ -n "$dlopened" ] || fail "no Paho soname found in wispd (runtime/src/paho.c dlopen()s them)"
for so in $sonames $dlopened; do
    path=$(ldconfig -p | awk -v so="$so" '$1 == so && p == "" {p = $NF} END {print p}')
    [ -n "$path" ] || fail "$so: not found by ldconfig"
    # dpkg knows a file under the path its package ships (/lib or /usr/lib).
    pkg=$(dpkg-query -S "$path" 2>/dev/null || dpkg-query -S "$(readlink -f "$path")" 2>/dev/null ||
        dpkg-query -S "${path#/usr}" 2>/dev/null || true)
    pkg=$(head -1 <<<"$pkg" | cut -d: -f1)
    [ -n "$pkg" ] || fail "$so ($path) belongs to no package"
    grep -qE "(^|, )$pkg( \(|,|$)" <<<"$depends" || fail "Depends lacks $pkg (for $so): $depends"
done
for pkg in liblua5.4-0 lua-cjson liblmdb0 libcjson1 libpaho-mqtt1.3 adduser; do
    grep -qE "(^|, )$pkg( \(|,|$)" <<<"$depends" || fail "Depends lacks $pkg: $depends"
done
say "package: ${deb##*/}, $(stat -c %s "$deb") bytes, Installed-Size $kib KiB, wispd + wisp $bin_bytes bytes"
say "Depends: $depends"

# --- 2. the unit ---------------------------------------------------------------------
# verify resolves ExecStart/ExecReload and the dependencies under --root: give
# the package's tree the units and the kill binary of this system.
verify_root=$TEST_TMP/verify-root
cp -a "$root" "$verify_root"
mkdir -p "$verify_root/lib/systemd/system" "$verify_root/bin"
cp -an /lib/systemd/system/. "$verify_root/lib/systemd/system/"
cp -a /bin/kill "$verify_root/bin/kill"
out=$(systemd-analyze verify --root="$verify_root" /lib/systemd/system/$UNIT 2>&1) || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify warns: $out"
unit=$root/lib/systemd/system/$UNIT
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
[ "$exec_start" = "/usr/bin/wispd --config /etc/wisp/wispd.json" ] || fail "ExecStart=$exec_start"
timeout_stop=$(sed -n 's/^TimeoutStopSec=//p' "$unit")
shutdown_ms=$(sed -n 's/.*"shutdown_timeout_ms": *\([0-9]*\).*/\1/p' "$root/etc/wisp/wispd.json")
[ $((timeout_stop * 1000)) -gt "${shutdown_ms:-10000}" ] || fail "TimeoutStopSec=$timeout_stop is not above shutdown_timeout_ms=$shutdown_ms"
read -ra unit_groups <<<"$(sed -n 's/^SupplementaryGroups=//p' "$unit")"
[ "${unit_groups[*]}" = "gpio i2c" ] || fail "SupplementaryGroups=${unit_groups[*]}"

# --- 3. install -----------------------------------------------------------------------
say "dpkg -i ${deb##*/}"
dpkg -i "$deb" >"$TEST_TMP/dpkg-i.log" 2>&1 || { cat "$TEST_TMP/dpkg-i.log" >&2; fail "dpkg -i failed"; }
[ "$(dpkg-query -W -f='${db:Status-Abbrev}' wisp)" = "ii " ] || fail "not installed: $(dpkg-query -W -f='${db:Status-Abbrev}' wisp)"
IFS=: read -r _ _ uid gid _ home shell <<<"$(getent passwd wisp)" || fail "no user wisp"
[ "$uid" -lt 1000 ] || fail "wisp is not a system user (uid $uid)"
[ "$home" = /var/lib/wisp ] || fail "wisp's home is $home"
[ "$shell" = /usr/sbin/nologin ] || fail "wisp's shell is $shell"
[ "$(getent group wisp | cut -d: -f3)" = "$gid" ] || fail "wisp's primary group is not wisp"
for g in "${unit_groups[@]}"; do
    getent group "$g" >/dev/null || fail "group $g (SupplementaryGroups=) does not exist; the unit would not start"
done
for d in /var/lib/wisp /var/lib/wisp/functions; do
    [ "$(stat -c '%U:%G %a' "$d")" = "wisp:wisp 750" ] || fail "$d: $(stat -c '%U:%G %a' "$d")"
done
[ "$(stat -c '%U:%G %a' /etc/wisp/trust)" = "root:root 755" ] || fail "/etc/wisp/trust: $(stat -c '%U:%G %a' /etc/wisp/trust)"
[ -L /etc/systemd/system/multi-user.target.wants/$UNIT ] || fail "$UNIT is not enabled"
/usr/bin/wispd --help >"$TEST_TMP/help" 2>&1 || fail "wispd --help failed: $(cat "$TEST_TMP/help")"
grep -q '^Usage: wispd' "$TEST_TMP/help" || fail "wispd --help: $(head -3 "$TEST_TMP/help")"
/usr/bin/wisp --help >/dev/null 2>&1 || fail "wisp --help failed"
out=$(systemd-analyze verify /lib/systemd/system/$UNIT 2>&1) || fail "systemd-analyze verify (installed): $out"
[ -z "$out" ] || fail "systemd-analyze verify (installed) warns: $out"

if [ -d /run/systemd/system ] && [ "$(ps -o comm= -p 1)" = systemd ]; then
    # systemd is PID 1: postinst started the service with the packaged config
    # (its broker need not be there: wispd starts offline). Stopped again
    # before the run below, which uses the same data directory.
    wait_for 20 "wispd.service active" bash -c "[ \"\$(systemctl is-active $UNIT)\" = active ]" ||
        { systemctl status $UNIT --no-pager >&2 || true; fail "$UNIT did not become active"; }
    systemctl reload $UNIT || fail "systemctl reload failed"
    systemctl stop $UNIT || fail "systemctl stop failed"
    [ "$(systemctl show -p ExecMainStatus --value $UNIT)" = 0 ] || fail "wispd.service did not exit 0 on stop"
    say "systemd is PID 1: $UNIT became active, reloaded and stopped cleanly"
    systemd_here=1
else
    say "systemd is not PID 1 here (PID 1 is $(ps -o comm= -p 1)): postinst enabled $UNIT but did not start it"
    systemd_here=0
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
WISPD_PID=$!
# shellcheck disable=SC2317 # run through wait_for
ready_or_gone() { grep -q 'msg="ready' "$wispd_log" || ! kill -0 "$WISPD_PID" 2>/dev/null; }
wait_for 20 "wispd ready" ready_or_gone || true
grep -q 'msg="ready' "$wispd_log" || { cat "$wispd_log" >&2; fail "wispd did not become ready"; }
[ "$(ps -o user= -p "$WISPD_PID")" = wisp ] || fail "wispd runs as $(ps -o user= -p "$WISPD_PID")"
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
kill -HUP "$WISPD_PID"
wait_for 10 "reload" grep -q 'reloaded /var/lib/wisp/functions: 2 function' "$wispd_log" || fail "SIGHUP did not reload"
mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -q 1 -t sensors/hall/temp -m '{"dev": "hall", "temp": 20}'
wait_for 10 "unit-convert" grep -q '^readings/hall/temp .*"f":68' "$TEST_TMP/sub.out" || fail "unit-convert did not answer after the reload"
grep -q 'executor confinement unavailable' "$wispd_log" && fail "executors ran unconfined: $(grep confinement "$wispd_log")"
# SIGTERM (the unit's KillSignal): drained, exit 0.
kill -TERM "$WISPD_PID"
rc=0
wait "$WISPD_PID" || rc=$?
WISPD_PID=
[ "$rc" -eq 0 ] || { tail "$wispd_log" >&2; fail "wispd exited with $rc on SIGTERM"; }
[ "$(stat -c %U /var/lib/wisp/store)" = wisp ] || fail "the store is not owned by wisp"
say "wispd as user wisp (groups ${unit_groups[*]}, no_new_privs): example answered, SIGHUP reloaded, SIGTERM exit 0"

# --- 4. upgrade (the same .deb again), remove, purge ----------------------------------
sed -i 's/"log_level": "info"/"log_level": "debug"/' /etc/wisp/wispd.json
uid_before=$uid
say "dpkg -i again (upgrade path)"
dpkg -i "$deb" >"$TEST_TMP/dpkg-i2.log" 2>&1 || { cat "$TEST_TMP/dpkg-i2.log" >&2; fail "installing over itself failed"; }
[ "$(dpkg-query -W -f='${db:Status-Abbrev}' wisp)" = "ii " ] || fail "not installed after the upgrade"
[ "$(getent passwd wisp | cut -d: -f3)" = "$uid_before" ] || fail "the user wisp changed"
grep -q '"log_level": "debug"' /etc/wisp/wispd.json || fail "the edited conffile was replaced"
[ -f /var/lib/wisp/functions/temp-alert/function.json ] || fail "the functions were lost"
[ -d /var/lib/wisp/store ] || fail "the store was lost"
if [ -f /etc/wisp/.created-groups ]; then
    [ "$(sort /etc/wisp/.created-groups | uniq -d)" = "" ] || fail "postinst recorded a group twice"
fi

say "dpkg -r"
dpkg -r wisp >"$TEST_TMP/dpkg-r.log" 2>&1 || { cat "$TEST_TMP/dpkg-r.log" >&2; fail "dpkg -r failed"; }
[ "$(dpkg-query -W -f='${db:Status-Abbrev}' wisp)" = "rc " ] || fail "after dpkg -r: $(dpkg-query -W -f='${db:Status-Abbrev}' wisp)"
if [ -e /usr/bin/wispd ] || [ -e "/lib/systemd/system/$UNIT" ]; then
    fail "dpkg -r left the binaries or the unit"
fi
if [ ! -d /var/lib/wisp/store ] || [ ! -f /var/lib/wisp/functions/temp-alert/handler.lua ]; then
    fail "dpkg -r deleted the data"
fi
[ -f /etc/wisp/wispd.json ] || fail "dpkg -r deleted the conffile"
getent passwd wisp >/dev/null || fail "dpkg -r deleted the user"

say "dpkg -P"
dpkg -P wisp >"$TEST_TMP/dpkg-p.log" 2>&1 || { cat "$TEST_TMP/dpkg-p.log" >&2; fail "dpkg -P failed"; }
status=$(dpkg-query -W -f='${db:Status-Status}' wisp 2>/dev/null || true)
[ -z "$status" ] || [ "$status" = not-installed ] || fail "after dpkg -P: $status"
[ ! -e /var/lib/wisp ] || fail "dpkg -P left /var/lib/wisp"
[ ! -e /etc/wisp ] || fail "dpkg -P left /etc/wisp"
getent passwd wisp >/dev/null && fail "dpkg -P left the user wisp"
getent group wisp >/dev/null && fail "dpkg -P left the group wisp"
snapshot >"$TEST_TMP/after"
diff -u "$TEST_TMP/before" "$TEST_TMP/after" >&2 || fail "the machine differs from before the test (users, groups, units)"
say "upgrade kept config and data; dpkg -r kept data, config and user; dpkg -P left the machine as before"

# --- 5. the unit under systemd, in a throwaway container --------------------------------
# The container: PID 1 is systemd in new mount, PID, network, UTS, IPC and
# cgroup namespaces; / is an overlay of this machine's / with a tmpfs on
# top, so installing and purging there changes nothing here. /proc/sys and
# /sys are read-only, units that touch the kernel's global settings
# (sysctl, modules, udev, the clock, timers) are masked, and the network
# has only its own loopback. It lives in a cgroup of its own, removed after.

container_skip() {
    say "systemd container skipped: $*"
    pass
}

# ct CMD...: runs CMD inside the container.
ct() { nsenter -t "$CT_PID1" -m -u -i -n -p -- "$@"; }

if [ "$systemd_here" = 1 ]; then
    pass
fi
[ "${WISP_TEST_CONTAINER:-1}" != 0 ] || container_skip "WISP_TEST_CONTAINER=0"
for tool in unshare nsenter pivot_root findmnt pgrep; do
    command -v "$tool" >/dev/null || container_skip "$tool is not installed"
done
[ -x /lib/systemd/systemd ] || container_skip "no /lib/systemd/systemd"
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || container_skip "no overlayfs in this kernel"
grep -qw overlay /proc/filesystems || container_skip "no overlayfs in this kernel"
cg2=$(findmnt -n -t cgroup2 -o TARGET | head -1)
[ -n "$cg2" ] || container_skip "no cgroup2 hierarchy mounted"
own=$(sed -n 's/^0:://p' /proc/self/cgroup)
CT_CGROUP=$cg2${own%/}/wisp-test-deb-$$
mkdir "$CT_CGROUP" 2>/dev/null || container_skip "cannot create a cgroup under $cg2${own%/}"

ct_dir=$TEST_TMP/ct
mkdir -p "$ct_dir"
: >"$TEST_TMP/console.log"
cat >"$TEST_TMP/ct-broker.conf" <<'EOF'
listener 1883 127.0.0.1
allow_anonymous true
persistence false
log_dest syslog
EOF
cat >"$TEST_TMP/ct-init.sh" <<EOF
#!/bin/bash
# PID 1 of the container's namespaces until it execs systemd.
set -euo pipefail
mount -t tmpfs -o mode=0755 wisp-test "$ct_dir"
mkdir "$ct_dir/upper" "$ct_dir/work" "$ct_dir/root"
mount -t overlay overlay -o lowerdir=/,upperdir="$ct_dir/upper",workdir="$ct_dir/work" "$ct_dir/root"
R="$ct_dir/root"
# The image overlay, as make-overlay.sh applies it to a Raspberry Pi OS root.
"$WISP_SOURCE_DIR/firmware/make-overlay.sh" --deb "$deb" --rootfs "\$R"
install -D -m 0644 "$TEST_TMP/ct-broker.conf" "\$R/etc/wisp-test/broker.conf"
# A policy-rc.d (as container images have) would forbid starting services.
rm -f "\$R/usr/sbin/policy-rc.d"
mkdir -p "\$R/etc/systemd/system"
for u in systemd-sysctl.service systemd-modules-load.service systemd-udevd.service \\
         systemd-udev-trigger.service systemd-binfmt.service systemd-timesyncd.service \\
         systemd-hwdb-update.service proc-sys-fs-binfmt_misc.automount timers.target \\
         getty.target console-getty.service; do
    ln -sfn /dev/null "\$R/etc/systemd/system/\$u"
done
cat >"\$R/etc/systemd/system/wisp-test-broker.service" <<'UNIT'
[Service]
ExecStart=/usr/sbin/mosquitto -c /etc/wisp-test/broker.conf
UNIT
cat >"\$R/etc/systemd/system/wisp-test.target" <<'UNIT'
[Unit]
Description=wisp package test
Wants=wisp-test-broker.service multi-user.target
UNIT
# Only the first boot unit and what the test adds: no other services of the host.
find "\$R/etc/systemd/system/multi-user.target.wants" -mindepth 1 ! -name wisp-firstboot.service -delete
mount -t proc proc "\$R/proc"
mount --bind "\$R/proc/sys" "\$R/proc/sys"
mount -o remount,bind,ro "\$R/proc/sys"
mount -t sysfs -o ro sysfs "\$R/sys"
mount -t cgroup2 cgroup2 "\$R/sys/fs/cgroup"
mount -t tmpfs -o mode=0755 tmpfs "\$R/dev"
for n in null zero full random urandom tty; do
    touch "\$R/dev/\$n"
    mount --bind "/dev/\$n" "\$R/dev/\$n"
done
mkdir "\$R/dev/pts" "\$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "\$R/dev/pts"
ln -s pts/ptmx "\$R/dev/ptmx"
mount -t tmpfs tmpfs "\$R/dev/shm"
touch "\$R/dev/console"
mount --bind "$TEST_TMP/console.log" "\$R/dev/console"
mount -t tmpfs -o mode=0755 tmpfs "\$R/run"
mount -t tmpfs -o mode=1777 tmpfs "\$R/tmp"
mkdir -p "\$R/.oldroot"
cd "\$R"
pivot_root . .oldroot
umount -l /.oldroot
exec env -i container=wisp-test /lib/systemd/systemd systemd.unit=wisp-test.target
EOF
say "booting systemd in a throwaway container (overlay of /, private namespaces)"
(echo "$BASHPID" >"$CT_CGROUP/cgroup.procs" &&
    exec unshare --mount --pid --fork --net --uts --ipc --cgroup --propagation private \
        bash "$TEST_TMP/ct-init.sh") >"$TEST_TMP/ct.log" 2>&1 &
CT_UNSHARE=$!
# shellcheck disable=SC2317 # run through wait_for
ct_up() {
    local state
    CT_PID1=$(pgrep -P "$CT_UNSHARE" | head -1) || return 1
    [ "$(ps -o comm= -p "$CT_PID1")" = systemd ] || return 1
    state=$(ct systemctl is-system-running 2>/dev/null || true)
    [ "$state" = running ] || [ "$state" = degraded ]
}
if ! wait_for 180 "systemd in the container to finish booting" ct_up; then
    kill -0 "$CT_UNSHARE" 2>/dev/null || container_skip "the container did not start: $(tail -3 "$TEST_TMP/ct.log" | tr '\n' ' ')"
    cat "$TEST_TMP/ct.log" "$TEST_TMP/console.log" >&2
    fail "systemd in the container did not finish booting"
fi
ct_fail() {
    ct journalctl -b --no-pager -o short-monotonic 2>/dev/null | tail -60 >&2 || true
    fail "container: $*"
}

# First boot: the overlay's unit installed the package with apt and disabled itself.
wait_for 120 "wisp-firstboot to finish" bash -c "[ \"\$(nsenter -t $CT_PID1 -m -u -i -n -p -- systemctl is-enabled wisp-firstboot.service 2>/dev/null)\" = disabled ]" ||
    ct_fail "wisp-firstboot.service did not finish: $(ct systemctl status wisp-firstboot.service --no-pager 2>&1 | tail -5)"
[ "$(ct systemctl show -p Result --value wisp-firstboot.service)" = success ] || ct_fail "wisp-firstboot.service failed"
[ "$(ct dpkg-query -W -f="\${db:Status-Abbrev}" wisp)" = "ii " ] || ct_fail "first boot did not install wisp"
ct journalctl -u wisp-firstboot.service -o cat --no-pager >"$TEST_TMP/firstboot.journal"
grep -q 'provisioning: /usr/lib/wisp/provision --owner wisp' "$TEST_TMP/firstboot.journal" ||
    ct_fail "first boot did not reach the provisioning step"
wait_for 20 "wispd.service active" bash -c "[ \"\$(nsenter -t $CT_PID1 -m -u -i -n -p -- systemctl is-active $UNIT)\" = active ]" ||
    ct_fail "$UNIT is not active after the first boot"
[ "$(ct systemctl is-enabled $UNIT)" = enabled ] || ct_fail "$UNIT is not enabled"
say "container: first boot installed the package with apt, disabled itself; $UNIT active"

# The broker by name: resolving under RestrictAddressFamilies= works.
ct sed -i 's#"tcp://127.0.0.1:1883"#"tcp://localhost:1883"#' /etc/wisp/wispd.json
ct systemctl restart $UNIT || ct_fail "systemctl restart failed"
wait_for 20 "wispd connected to localhost" bash -c "nsenter -t $CT_PID1 -m -u -i -n -p -- journalctl -u $UNIT -o cat --no-pager | grep -q 'connected to localhost:1883'" ||
    ct_fail "wispd did not connect to the broker tcp://localhost:1883"

# The service as systemd runs it: user, groups, no_new_privs, seccomp.
main=$(ct systemctl show -p MainPID --value $UNIT)
ct_status() { ct cat "/proc/$1/status"; }
[ "$(ct_status "$main" | awk '/^Uid:/ {print $2}')" = "$(ct id -u wisp)" ] || ct_fail "wispd does not run as wisp"
[ "$(ct_status "$main" | awk '/^NoNewPrivs:/ {print $2}')" = 1 ] || ct_fail "no_new_privs is not set"
[ "$(ct_status "$main" | awk '/^Seccomp:/ {print $2}')" = 2 ] || ct_fail "no seccomp filter on wispd"
[ "$(ct_status "$main" | awk '/^CapEff:/ {print $2}')" = 0000000000000000 ] || ct_fail "wispd has capabilities"
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
ct dpkg -P wisp >"$TEST_TMP/ct-purge.log" 2>&1 || { cat "$TEST_TMP/ct-purge.log" >&2; ct_fail "dpkg -P failed"; }
[ "$(ct systemctl is-active $UNIT 2>/dev/null || true)" != active ] || ct_fail "$UNIT still active after purge"
ct getent passwd wisp >/dev/null && ct_fail "the user wisp is left after purge"
ct test -e /var/lib/wisp && ct_fail "/var/lib/wisp is left after purge"
say "container: dpkg -P stopped the service and removed everything"
container_stop
pass
