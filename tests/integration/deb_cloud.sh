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

me=${0##*/}
say() { echo "$me: $*"; }
skip() {
    echo "SKIP: $me: $*"
    exit 77
}

PKG=wisp-cloud
CUSER=wisp-cloud
UNIT=wisp-cloud.service
ETC=/etc/wisp-cloud
DATA=/var/lib/wisp-cloud

# --- preconditions ---------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || skip "needs root: it installs the package with dpkg -i and creates a system user (run ctest as root)"
for tool in dpkg dpkg-deb dpkg-query systemd-analyze setpriv mosquitto curl readelf getent ldconfig; do
    command -v "$tool" >/dev/null || skip "$tool is not installed"
done
[ -n "${WISP_CLOUD_DEB:-}" ] || command -v cpack >/dev/null || skip "cpack is not installed (or set WISP_CLOUD_DEB to a built package)"
status=$(dpkg-query -W -f='${db:Status-Status}' $PKG 2>/dev/null || true)
[ -z "$status" ] || [ "$status" = not-installed ] ||
    skip "the package $PKG is on this machine ($status); the test would purge it"
for what in $DATA $ETC; do
    [ ! -e "$what" ] || skip "$what exists; the test would delete it"
done
getent passwd $CUSER >/dev/null && skip "a user $CUSER exists; the test would delete it"
getent group $CUSER >/dev/null && skip "a group $CUSER exists; the test would delete it"

snapshot() {
    getent passwd | cut -d: -f1 | sort
    echo --
    getent group | cut -d: -f1 | sort
    echo --
    find /etc/systemd/system /var/lib/systemd/deb-systemd-helper-enabled \
        /var/lib/systemd/deb-systemd-helper-masked -name '*wisp-cloud*' 2>/dev/null | sort || true
    ls -d $DATA $ETC /lib/systemd/system/$UNIT /usr/bin/wisp-cloud 2>/dev/null || true
}

test_tmp_init
snapshot >"$TEST_TMP/before"
CLOUD_PID=
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

# shellcheck disable=SC2317 # run by the EXIT trap
restore_machine() {
    local rc=$?
    set +e
    [ -z "$CLOUD_PID" ] || stop_pid "$CLOUD_PID" 15
    container_stop
    status=$(dpkg-query -W -f='${db:Status-Status}' "$PKG" 2>/dev/null || true)
    if [ -n "$status" ] && [ "$status" != not-installed ]; then
        echo "$me: cleanup: purging the package ($status)" >&2
        dpkg --purge "$PKG" >/dev/null 2>&1 || echo "$me: cleanup: dpkg --purge $PKG failed" >&2
    fi
    getent passwd "$CUSER" >/dev/null && { userdel "$CUSER" || true; }
    getent group "$CUSER" >/dev/null && { groupdel "$CUSER" || true; }
    rm -rf "$DATA" "$ETC"
    rm -f "/etc/systemd/system/multi-user.target.wants/$UNIT" "/etc/systemd/system/$UNIT" \
        "/var/lib/systemd/deb-systemd-helper-enabled/$UNIT.dsh-also" \
        "/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/$UNIT" \
        "/var/lib/systemd/deb-systemd-helper-masked/$UNIT"
    (exit "$rc")
    test_cleanup
}
trap restore_machine EXIT

# --- 1. build and inspect the packages --------------------------------------------------
arch=$(dpkg --print-architecture)
version=${WISP_VERSION:-$(sed -n 's/^project(wisp VERSION \([0-9.]*\).*/\1/p' "$WISP_SOURCE_DIR/CMakeLists.txt")}
wisp_deb=
if [ -n "${WISP_CLOUD_DEB:-}" ]; then
    deb=$WISP_CLOUD_DEB
    [ -f "$deb" ] || fail "WISP_CLOUD_DEB=$deb: no such file"
else
    say "cpack in $WISP_BUILD_DIR (output in the test's temp dir)"
    cpack -G DEB --config "$WISP_BUILD_DIR/CPackConfig.cmake" -B "$TEST_TMP/cpack" >"$TEST_TMP/cpack.log" 2>&1 ||
        { cat "$TEST_TMP/cpack.log" >&2; fail "cpack failed"; }
    made=$(cd "$TEST_TMP/cpack" && printf '%s\n' *.deb | sort | paste -sd' ')
    [ "$made" = "wisp-cloud_${version}_${arch}.deb wisp_${version}_${arch}.deb" ] ||
        fail "cpack made: $made (expected wisp_${version}_${arch}.deb and wisp-cloud_${version}_${arch}.deb)"
    deb=$TEST_TMP/cpack/wisp-cloud_${version}_${arch}.deb
    wisp_deb=$TEST_TMP/cpack/wisp_${version}_${arch}.deb
fi
field() { dpkg-deb --field "$deb" "$1"; }
[ "$(field Package)" = $PKG ] || fail "Package: $(field Package)"
[ "$(field Version)" = "$version" ] || fail "Version: $(field Version), project version $version"
[ "$(field Architecture)" = "$arch" ] || fail "Architecture: $(field Architecture), this machine is $arch"
summary=$(field Description | head -1)
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

dpkg-deb --control "$deb" "$TEST_TMP/control"
[ "$(cat "$TEST_TMP/control/conffiles")" = $ETC/wisp-cloud.env ] || fail "conffiles: $(cat "$TEST_TMP/control/conffiles")"
for s in postinst prerm postrm; do
    [ -x "$TEST_TMP/control/$s" ] || fail "$s is missing or not executable"
    sh -n "$TEST_TMP/control/$s" || fail "$s: syntax error"
    head -1 "$TEST_TMP/control/$s" | grep -qx '#!/bin/sh' || fail "$s is not a POSIX sh script"
    grep -qx 'set -e' "$TEST_TMP/control/$s" || fail "$s lacks set -e"
    cmp -s "$TEST_TMP/control/$s" "$WISP_SOURCE_DIR/firmware/debian-cloud/$s" || fail "$s is not firmware/debian-cloud/$s"
done

root=$TEST_TMP/root
dpkg-deb -x "$deb" "$root"
bin=$root/usr/bin/wisp-cloud
[ "$(readelf -S "$bin" | grep -c '\.symtab')" -eq 0 ] || fail "wisp-cloud is not stripped"
bin_bytes=$(stat -c %s "$bin")
kib=$(find "$root" -printf '%y %s\n' | awk '$1 == "f" || $1 == "l" {k += int(($2 + 1023) / 1024); next} {k += 1} END {print k}')
[ "$(field Installed-Size)" = "$kib" ] || fail "Installed-Size $(field Installed-Size), the files take $kib KiB"

# Depends: the package of every library wisp-cloud links and of the Paho
# library its MQTT client dlopen()s.
depends=$(field Depends)
sonames=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort -u)
dlopened=$(grep -aoE 'libpaho-mqtt3as?\.so\.[0-9]+' "$bin" | sort -u)
[ -n "$dlopened" ] || fail "no Paho soname found in wisp-cloud (runtime/src/paho.c dlopen()s them)"
for so in $sonames $dlopened; do
    path=$(ldconfig -p | awk -v so="$so" '$1 == so && p == "" {p = $NF} END {print p}')
    [ -n "$path" ] || fail "$so: not found by ldconfig"
    pkg=$(dpkg-query -S "$path" 2>/dev/null || dpkg-query -S "$(readlink -f "$path")" 2>/dev/null ||
        dpkg-query -S "${path#/usr}" 2>/dev/null || true)
    pkg=$(head -1 <<<"$pkg" | cut -d: -f1)
    [ -n "$pkg" ] || fail "$so ($path) belongs to no package"
    grep -qE "(^|, )$pkg( \(|,|$)" <<<"$depends" || fail "Depends lacks $pkg (for $so): $depends"
done
for pkg in libmicrohttpd12 liblmdb0 libcjson1 libmbedcrypto7 libpaho-mqtt1.3 adduser; do
    grep -qE "(^|, )$pkg( \(|,|$)" <<<"$depends" || fail "Depends lacks $pkg: $depends"
done
say "package: ${deb##*/}, $(stat -c %s "$deb") bytes, Installed-Size $kib KiB, wisp-cloud $bin_bytes bytes"
say "Depends: $depends"
[ -z "$wisp_deb" ] || say "also made: ${wisp_deb##*/}, $(stat -c %s "$wisp_deb") bytes, Installed-Size $(dpkg-deb --field "$wisp_deb" Installed-Size) KiB"

# --- 2. the unit ---------------------------------------------------------------------
verify_root=$TEST_TMP/verify-root
cp -a "$root" "$verify_root"
mkdir -p "$verify_root/lib/systemd/system"
cp -an /lib/systemd/system/. "$verify_root/lib/systemd/system/"
out=$(systemd-analyze verify --root="$verify_root" /lib/systemd/system/$UNIT 2>&1) || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify warns: $out"
unit=$root/lib/systemd/system/$UNIT
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
# shellcheck disable=SC2016 # systemd's ${VAR}, literally
[ "$exec_start" = '/usr/bin/wisp-cloud --broker ${WISP_CLOUD_BROKER} --listen ${WISP_CLOUD_LISTEN} --data /var/lib/wisp-cloud --token-file /etc/wisp-cloud/token' ] ||
    fail "ExecStart=$exec_start"
[ "$(sed -n 's/^EnvironmentFile=//p' "$unit")" = $ETC/wisp-cloud.env ] || fail "EnvironmentFile= is not $ETC/wisp-cloud.env"
grep -qx 'WISP_CLOUD_BROKER=tcp://127.0.0.1:1883' "$root$ETC/wisp-cloud.env" || fail "wisp-cloud.env: no default broker"
grep -qx 'WISP_CLOUD_LISTEN=127.0.0.1:8080' "$root$ETC/wisp-cloud.env" || fail "wisp-cloud.env: no default listen address"
for line in User=$CUSER Group=$CUSER CapabilityBoundingSet= ProtectSystem=strict StateDirectory=wisp-cloud \
    ReadWritePaths=$DATA PrivateTmp=yes 'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6' \
    SystemCallFilter=@system-service MemoryDenyWriteExecute=yes Restart=on-failure StandardError=journal; do
    grep -qxF -- "$line" "$unit" || fail "the unit lacks $line"
done

# --- 3. install -----------------------------------------------------------------------
say "dpkg -i ${deb##*/}"
dpkg -i "$deb" >"$TEST_TMP/dpkg-i.log" 2>&1 || { cat "$TEST_TMP/dpkg-i.log" >&2; fail "dpkg -i failed"; }
[ "$(dpkg-query -W -f='${db:Status-Abbrev}' $PKG)" = "ii " ] || fail "not installed: $(dpkg-query -W -f='${db:Status-Abbrev}' $PKG)"
IFS=: read -r _ _ uid gid _ home shell <<<"$(getent passwd $CUSER)" || fail "no user $CUSER"
[ "$uid" -lt 1000 ] || fail "$CUSER is not a system user (uid $uid)"
[ "$home" = $DATA ] || fail "$CUSER's home is $home"
[ "$shell" = /usr/sbin/nologin ] || fail "$CUSER's shell is $shell"
[ "$(getent group $CUSER | cut -d: -f3)" = "$gid" ] || fail "$CUSER's primary group is not $CUSER"
[ "$(stat -c '%U:%G %a' $DATA)" = "$CUSER:$CUSER 750" ] || fail "$DATA: $(stat -c '%U:%G %a' $DATA)"
[ "$(stat -c '%U:%G %a' $ETC/token)" = "root:$CUSER 640" ] || fail "$ETC/token: $(stat -c '%U:%G %a' $ETC/token)"
token=$(cat $ETC/token)
[[ $token =~ ^[0-9a-f]{32}$ ]] || fail "the token is not 32 hex digits: '$token'"
[ "$(wc -l <$ETC/token)" = 1 ] || fail "the token file is not one line"
[ -L /etc/systemd/system/multi-user.target.wants/$UNIT ] || fail "$UNIT is not enabled"
out=$(systemd-analyze verify /lib/systemd/system/$UNIT 2>&1) || fail "systemd-analyze verify (installed): $out"
[ -z "$out" ] || fail "systemd-analyze verify (installed) warns: $out"

if [ -d /run/systemd/system ] && [ "$(ps -o comm= -p 1)" = systemd ]; then
    wait_for 20 "$UNIT active" bash -c "[ \"\$(systemctl is-active $UNIT)\" = active ]" ||
        { systemctl status $UNIT --no-pager >&2 || true; fail "$UNIT did not become active"; }
    curl -sf -H "Authorization: Bearer $token" http://127.0.0.1:8080/v1/health | grep -q '"ok":true' ||
        fail "$UNIT does not answer on 127.0.0.1:8080"
    systemctl stop $UNIT || fail "systemctl stop failed"
    [ "$(systemctl show -p ExecMainStatus --value $UNIT)" = 0 ] || fail "$UNIT did not exit 0 on stop"
    say "systemd is PID 1: $UNIT became active, answered and stopped cleanly"
    systemd_here=1
else
    say "systemd is not PID 1 here (PID 1 is $(ps -o comm= -p 1)): postinst enabled $UNIT but did not start it"
    systemd_here=0
fi

# The unit's command line as systemd runs it: the variables from its
# EnvironmentFile (edited to point at this test's broker and a free port:
# the conffile edit is also what the upgrade below must keep), user and group
# wisp-cloud, no capabilities, no_new_privs, / as the working directory.
# shellcheck disable=SC2119 # no extra mosquitto.conf lines
broker_start
sed -i -e "s#^WISP_CLOUD_BROKER=.*#WISP_CLOUD_BROKER=$BROKER_URI#" \
    -e 's#^WISP_CLOUD_LISTEN=.*#WISP_CLOUD_LISTEN=127.0.0.1:0#' $ETC/wisp-cloud.env
env_value() { sed -n "s/^$1=//p" $ETC/wisp-cloud.env | tail -1; }
read -ra cmd <<<"$exec_start"
for i in "${!cmd[@]}"; do
    if [[ ${cmd[$i]} =~ ^\$\{([A-Z_]+)\}$ ]]; then
        cmd[i]=$(env_value "${BASH_REMATCH[1]}")
        [ -n "${cmd[$i]}" ] || fail "${BASH_REMATCH[1]} is not set in $ETC/wisp-cloud.env"
    fi
done
cloud_log=$TEST_TMP/wisp-cloud.log
(cd / && exec setpriv --reuid=$CUSER --regid=$CUSER --clear-groups --inh-caps=-all --bounding-set=-all \
    --no-new-privs -- env -i "${cmd[@]}") >"$cloud_log" 2>&1 &
CLOUD_PID=$!
# shellcheck disable=SC2317 # run through wait_for
port_or_gone() { [ -s "$DATA/http.port" ] || ! kill -0 "$CLOUD_PID" 2>/dev/null; }
wait_for 20 "wisp-cloud listening" port_or_gone || true
[ -s $DATA/http.port ] || { cat "$cloud_log" >&2; fail "wisp-cloud did not write $DATA/http.port"; }
[ "$(ps -o user= -p "$CLOUD_PID")" = $CUSER ] || fail "wisp-cloud runs as $(ps -o user= -p "$CLOUD_PID")"
http=http://127.0.0.1:$(cat $DATA/http.port)
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
[ "$(stat -c %U $DATA/db)" = $CUSER ] || fail "the store is not owned by $CUSER"
kill -TERM "$CLOUD_PID"
rc=0
wait "$CLOUD_PID" || rc=$?
CLOUD_PID=
[ "$rc" -eq 0 ] || { tail "$cloud_log" >&2; fail "wisp-cloud exited with $rc on SIGTERM"; }
say "ExecStart as user $CUSER (EnvironmentFile variables, no_new_privs): /v1/health answered with the token, SIGTERM exit 0"

# --- 4. upgrade (the same .deb again), remove, purge ----------------------------------
say "dpkg -i again (upgrade path)"
dpkg -i "$deb" >"$TEST_TMP/dpkg-i2.log" 2>&1 || { cat "$TEST_TMP/dpkg-i2.log" >&2; fail "installing over itself failed"; }
[ "$(dpkg-query -W -f='${db:Status-Abbrev}' $PKG)" = "ii " ] || fail "not installed after the upgrade"
[ "$(getent passwd $CUSER | cut -d: -f3)" = "$uid" ] || fail "the user $CUSER changed"
[ "$(cat $ETC/token)" = "$token" ] || fail "the token was replaced"
[ "$(stat -c '%U:%G %a' $ETC/token)" = "root:$CUSER 640" ] || fail "$ETC/token after the upgrade: $(stat -c '%U:%G %a' $ETC/token)"
grep -qx "WISP_CLOUD_BROKER=$BROKER_URI" $ETC/wisp-cloud.env || fail "the edited conffile was replaced"
[ -d $DATA/db ] || fail "the store was lost"

say "dpkg -r"
dpkg -r $PKG >"$TEST_TMP/dpkg-r.log" 2>&1 || { cat "$TEST_TMP/dpkg-r.log" >&2; fail "dpkg -r failed"; }
[ "$(dpkg-query -W -f='${db:Status-Abbrev}' $PKG)" = "rc " ] || fail "after dpkg -r: $(dpkg-query -W -f='${db:Status-Abbrev}' $PKG)"
if [ -e /usr/bin/wisp-cloud ] || [ -e /lib/systemd/system/$UNIT ]; then
    fail "dpkg -r left the binary or the unit"
fi
[ -d $DATA/db ] || fail "dpkg -r deleted the data"
[ "$(cat $ETC/token)" = "$token" ] || fail "dpkg -r deleted or changed the token"
[ -f $ETC/wisp-cloud.env ] || fail "dpkg -r deleted the conffile"
getent passwd $CUSER >/dev/null || fail "dpkg -r deleted the user"

say "dpkg -P"
dpkg -P $PKG >"$TEST_TMP/dpkg-p.log" 2>&1 || { cat "$TEST_TMP/dpkg-p.log" >&2; fail "dpkg -P failed"; }
status=$(dpkg-query -W -f='${db:Status-Status}' $PKG 2>/dev/null || true)
[ -z "$status" ] || [ "$status" = not-installed ] || fail "after dpkg -P: $status"
[ ! -e $DATA ] || fail "dpkg -P left $DATA"
[ ! -e $ETC ] || fail "dpkg -P left $ETC"
getent passwd $CUSER >/dev/null && fail "dpkg -P left the user $CUSER"
getent group $CUSER >/dev/null && fail "dpkg -P left the group $CUSER"
snapshot >"$TEST_TMP/after"
diff -u "$TEST_TMP/before" "$TEST_TMP/after" >&2 || fail "the machine differs from before the test (users, groups, units)"
say "upgrade kept token, config and data; dpkg -r kept them and the user; dpkg -P left the machine as before"

# --- 5. the unit under systemd, in a throwaway container --------------------------------
# As in deb_package.sh: PID 1 is systemd in new mount, PID, network, UTS, IPC
# and cgroup namespaces on a tmpfs overlay of this machine's /, /proc/sys and
# /sys read-only, kernel-facing units masked, its own loopback and cgroup.
# The package is installed there with dpkg -i while systemd runs.
container_skip() {
    say "systemd container skipped: $*"
    pass
}
ct() { nsenter -t "$CT_PID1" -m -u -i -n -p -- "$@"; }

[ "$systemd_here" = 0 ] || pass
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
CT_CGROUP=$cg2${own%/}/wisp-test-cloud-$$
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
set -euo pipefail
mount -t tmpfs -o mode=0755 wisp-test "$ct_dir"
mkdir "$ct_dir/upper" "$ct_dir/work" "$ct_dir/root"
mount -t overlay overlay -o lowerdir=/,upperdir="$ct_dir/upper",workdir="$ct_dir/work" "$ct_dir/root"
R="$ct_dir/root"
install -D -m 0644 "$deb" "\$R/var/cache/wisp-test/$PKG.deb"
install -D -m 0644 "$TEST_TMP/ct-broker.conf" "\$R/etc/wisp-test/broker.conf"
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
Description=wisp-cloud package test
Wants=wisp-test-broker.service multi-user.target
UNIT
# No services of the host.
find "\$R/etc/systemd/system/multi-user.target.wants" -mindepth 1 -delete 2>/dev/null || true
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
# shellcheck disable=SC2317 # run through wait_for
ct_active() { [ "$(ct systemctl is-active "$UNIT" 2>/dev/null)" = active ]; }
# shellcheck disable=SC2317 # run through wait_for
ct_health() {
    ct curl -sf -H "Authorization: Bearer $(ct cat "$ETC/token")" http://127.0.0.1:8080/v1/health | grep -q '"mqtt":"connected"'
}

ct dpkg -i /var/cache/wisp-test/$PKG.deb >"$TEST_TMP/ct-dpkg-i.log" 2>&1 || { cat "$TEST_TMP/ct-dpkg-i.log" >&2; ct_fail "dpkg -i failed"; }
wait_for 20 "$UNIT active" ct_active || ct_fail "postinst did not start $UNIT"
[ "$(ct systemctl is-enabled $UNIT)" = enabled ] || ct_fail "$UNIT is not enabled"
wait_for 20 "wisp-cloud connected, answering on 127.0.0.1:8080" ct_health ||
    ct_fail "GET /v1/health on 127.0.0.1:8080 (the packaged settings) did not answer connected"
[ "$(ct cat $DATA/http.port)" = 8080 ] || ct_fail "$DATA/http.port: $(ct cat $DATA/http.port)"
main=$(ct systemctl show -p MainPID --value $UNIT)
ct_status() { ct cat "/proc/$1/status"; }
[ "$(ct_status "$main" | awk '/^Uid:/ {print $2}')" = "$(ct id -u $CUSER)" ] || ct_fail "wisp-cloud does not run as $CUSER"
[ "$(ct_status "$main" | awk '/^NoNewPrivs:/ {print $2}')" = 1 ] || ct_fail "no_new_privs is not set"
[ "$(ct_status "$main" | awk '/^Seccomp:/ {print $2}')" = 2 ] || ct_fail "no seccomp filter on wisp-cloud"
[ "$(ct_status "$main" | awk '/^CapEff:/ {print $2}')" = 0000000000000000 ] || ct_fail "wisp-cloud has capabilities"
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
ct dpkg -P $PKG >"$TEST_TMP/ct-purge.log" 2>&1 || { cat "$TEST_TMP/ct-purge.log" >&2; ct_fail "dpkg -P failed"; }
[ "$(ct systemctl is-active $UNIT 2>/dev/null || true)" != active ] || ct_fail "$UNIT still active after purge"
ct getent passwd $CUSER >/dev/null && ct_fail "the user $CUSER is left after purge"
ct test -e $DATA && ct_fail "$DATA is left after purge"
say "container: dpkg -P stopped the service and removed everything"
container_stop
pass
