# shellcheck shell=bash
#
# Helpers for the root-only tests of a Debian package (deb_package.sh,
# deb_cloud.sh): they install, upgrade, remove and purge the package for real,
# give the machine back as they found it, and boot the package's unit under a
# throwaway systemd. Source after tests/lib/broker.sh (fail, pass, wait_for,
# stop_pid, test_tmp_init, test_cleanup):
#
#   PKG=wisp-cloud PKG_USER=wisp-cloud UNIT=wisp-cloud.service
#   PKG_DATA=/var/lib/wisp-cloud PKG_ETC=/etc/wisp-cloud PKG_BINS=(/usr/bin/wisp-cloud)
#   source "$WISP_SOURCE_DIR/tests/lib/debtest.sh"
#
# The caller sets, before calling anything below:
#   PKG          the package's name
#   PKG_USER     the system user (and group) its postinst creates
#   UNIT         its systemd unit, e.g. wispd.service
#   PKG_DATA     its data directory (the user's home), e.g. /var/lib/wisp
#   PKG_ETC      its configuration directory, e.g. /etc/wisp
#   PKG_BINS     array: the programs it installs (their absence is checked after purge)
#   PKG_GROUPS   array, optional: further groups its postinst may create (deleted
#                by the cleanup unless they existed before the test)
#   deb          the .deb under test (set by deb_from_env or by the caller after
#                deb_cpack), before field, deb_check_* and the install steps
#   root         where deb_unpack extracted it (deb_unpack sets it)
#   DEB_PID      the pid of the package's program when the test runs it outside
#                systemd, empty otherwise: the cleanup stops it
#
# Provides:
#   say MSG / skip MSG                  a line prefixed with the test's name / exit 77
#   deb_preconditions DEB_VAR TOOL...   skips unless root, the tools (and cpack, or
#                                       $DEB_VAR) are there and no installation of
#                                       the package, its user or directories exists
#   deb_machine_init                    $TEST_TMP, the machine's "before" snapshot,
#                                       the EXIT trap restore_machine
#   snapshot                            users, groups, unit links and paths the package may touch
#   restore_machine                     the EXIT trap: stops DEB_PID and the container,
#                                       purges, deletes user, groups, directories, unit links
#   deb_version_arch                    sets $version (the project's) and $arch (dpkg's)
#   deb_from_env VAR                    deb=$VAR when VAR is set (it must exist); else false
#   deb_cpack                           cpack -G DEB from $WISP_BUILD_DIR into $TEST_TMP/cpack
#   field NAME                          a control field of $deb
#   deb_check_fields                    Package, Version, Architecture
#   deb_check_control CONFFILES         control/conffiles, the maintainer scripts are
#                                       executable POSIX sh; extracted to $TEST_TMP/control
#   deb_unpack                          extracts $deb into root=$TEST_TMP/root
#   deb_check_installed_size            Installed-Size as dpkg-gencontrol computes it; sets $kib
#   deb_check_depends DLOPENER BIN...   Depends names the package of every library the
#                                       BINs link and of the Paho libraries DLOPENER
#                                       dlopen()s; sets $depends
#   deb_check_depends_on PKG...         Depends names these packages
#   deb_verify_unit [HOST_FILE...]      systemd-analyze verify on the package's tree
#                                       (plus the host's units and these files)
#   deb_install                         dpkg -i $deb, installed ("ii ")
#   deb_check_user                      $PKG_USER: system user, home $PKG_DATA, nologin,
#                                       its own primary group; sets $uid and $gid
#   deb_check_installed_unit            the unit enabled, systemd-analyze verify on it
#   deb_systemd_here                    true (systemd_here=1) when systemd is PID 1, else
#                                       says so and is false (systemd_here=0)
#   deb_stop NAME LOG                   SIGTERM to $DEB_PID, which must exit 0
#   deb_reinstall                       dpkg -i again (the upgrade path); the user kept
#   deb_remove                          dpkg -r; the package left in state "rc "
#   deb_purge                           dpkg -P; package, directories, user, group gone,
#                                       the machine as in the "before" snapshot
#   container_start CGROUP DESC [KEEP_WANTS] <PREPARE
#                                       boots systemd in a throwaway container: private
#                                       namespaces, a tmpfs overlay of /, its own cgroup
#                                       CGROUP, a broker unit and target wisp-test.target
#                                       (DESC); PREPARE (stdin) is shell run on the new
#                                       root "$R" before boot (installing the package);
#                                       multi-user.target.wants keeps only KEEP_WANTS.
#                                       Skips step 5 with container_skip when it cannot.
#   container_skip MSG                  says why and passes
#   container_stop                      powers the container off, removes its cgroup
#   ct CMD... / ct_status PID           CMD in the container / its /proc/PID/status
#   ct_fail MSG                         fails with the container's journal
#   ct_active                           $UNIT is active in the container
#   ct_check_hardened PID NAME          runs as $PKG_USER, no_new_privs, seccomp, no capabilities
#   ct_purge NAME                       dpkg -P in the container: stopped, user and data gone

me=${0##*/}
say() { echo "$me: $*"; }
skip() {
    echo "SKIP: $me: $*"
    exit 77
}

declare -p PKG_GROUPS >/dev/null 2>&1 || PKG_GROUPS=()
DEB_PID=
CT_UNSHARE=
CT_CGROUP=
CT_PID1=
_deb_pre_groups=()

# --- preconditions, snapshot and cleanup ------------------------------------------------

deb_preconditions() {
    local deb_var=$1 tool status what
    shift
    [ "$(id -u)" -eq 0 ] || skip "needs root: it installs the package with dpkg -i and creates a system user (run ctest as root)"
    for tool in "$@"; do
        command -v "$tool" >/dev/null || skip "$tool is not installed"
    done
    [ -n "${!deb_var:-}" ] || command -v cpack >/dev/null || skip "cpack is not installed (or set $deb_var to a built package)"
    status=$(dpkg-query -W -f='${db:Status-Status}' "$PKG" 2>/dev/null || true)
    [ -z "$status" ] || [ "$status" = not-installed ] ||
        skip "the package $PKG is on this machine ($status); the test would purge it"
    for what in "$PKG_DATA" "$PKG_ETC"; do
        [ ! -e "$what" ] || skip "$what exists; the test would delete it"
    done
    getent passwd "$PKG_USER" >/dev/null && skip "a user $PKG_USER exists; the test would delete it"
    getent group "$PKG_USER" >/dev/null && skip "a group $PKG_USER exists; the test would delete it"
    return 0
}

# What the package may change, before it is installed: compared after purge.
snapshot() {
    getent passwd | cut -d: -f1 | sort
    echo --
    getent group | cut -d: -f1 | sort
    echo --
    find /etc/systemd/system /var/lib/systemd/deb-systemd-helper-enabled \
        /var/lib/systemd/deb-systemd-helper-masked -name "*$PKG*" 2>/dev/null | sort || true
    ls -d "$PKG_DATA" "$PKG_ETC" "/lib/systemd/system/$UNIT" "${PKG_BINS[@]}" 2>/dev/null || true
}

deb_machine_init() {
    local g
    for g in "${PKG_GROUPS[@]}"; do
        getent group "$g" >/dev/null && _deb_pre_groups+=("$g")
    done
    test_tmp_init
    snapshot >"$TEST_TMP/before"
    trap restore_machine EXIT
}

# Restores the machine: stops what the test started, purges the package,
# deletes the user, groups and directories it created. Then the usual
# cleanup of broker.sh (the broker, $TEST_TMP).
# shellcheck disable=SC2317 # run by the EXIT trap
restore_machine() {
    local rc=$? g status
    set +e # best effort: every step runs, whatever failed before
    [ -z "$DEB_PID" ] || stop_pid "$DEB_PID" 15
    container_stop
    status=$(dpkg-query -W -f='${db:Status-Status}' "$PKG" 2>/dev/null || true)
    if [ -n "$status" ] && [ "$status" != not-installed ]; then
        echo "$me: cleanup: purging the package ($status)" >&2
        dpkg --purge "$PKG" >/dev/null 2>&1 || echo "$me: cleanup: dpkg --purge $PKG failed" >&2
    fi
    getent passwd "$PKG_USER" >/dev/null && { userdel "$PKG_USER" || true; }
    getent group "$PKG_USER" >/dev/null && { groupdel "$PKG_USER" || true; }
    for g in "${PKG_GROUPS[@]}"; do
        if getent group "$g" >/dev/null && [[ " ${_deb_pre_groups[*]} " != *" $g "* ]]; then
            groupdel "$g" || true
        fi
    done
    rm -rf "$PKG_DATA" "$PKG_ETC"
    rm -f "/etc/systemd/system/multi-user.target.wants/$UNIT" "/etc/systemd/system/$UNIT" \
        "/var/lib/systemd/deb-systemd-helper-enabled/$UNIT.dsh-also" \
        "/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/$UNIT" \
        "/var/lib/systemd/deb-systemd-helper-masked/$UNIT"
    (exit "$rc")
    test_cleanup
}

# --- 1. build and inspect the package ----------------------------------------------------

deb_version_arch() {
    arch=$(dpkg --print-architecture)
    version=${WISP_VERSION:-$(sed -n 's/^project(wisp VERSION \([0-9.]*\).*/\1/p' "$WISP_SOURCE_DIR/CMakeLists.txt")}
}

deb_from_env() {
    [ -n "${!1:-}" ] || return 1
    deb=${!1}
    [ -f "$deb" ] || fail "$1=$deb: no such file"
}

deb_cpack() {
    say "cpack in $WISP_BUILD_DIR (output in the test's temp dir)"
    cpack -G DEB --config "$WISP_BUILD_DIR/CPackConfig.cmake" -B "$TEST_TMP/cpack" >"$TEST_TMP/cpack.log" 2>&1 ||
        { cat "$TEST_TMP/cpack.log" >&2; fail "cpack failed"; }
}

field() { dpkg-deb --field "$deb" "$1"; }

deb_check_fields() {
    [ "$(field Package)" = "$PKG" ] || fail "Package: $(field Package)"
    [ "$(field Version)" = "$version" ] || fail "Version: $(field Version), project version $version"
    [ "$(field Architecture)" = "$arch" ] || fail "Architecture: $(field Architecture), this machine is $arch"
}

deb_check_control() {
    local s
    dpkg-deb --control "$deb" "$TEST_TMP/control"
    [ "$(cat "$TEST_TMP/control/conffiles")" = "$1" ] || fail "conffiles: $(cat "$TEST_TMP/control/conffiles")"
    for s in postinst prerm postrm; do
        [ -x "$TEST_TMP/control/$s" ] || fail "$s is missing or not executable"
        sh -n "$TEST_TMP/control/$s" || fail "$s: syntax error"
        head -1 "$TEST_TMP/control/$s" | grep -qx '#!/bin/sh' || fail "$s is not a POSIX sh script"
    done
}

deb_unpack() {
    root=$TEST_TMP/root
    dpkg-deb -x "$deb" "$root"
}

# Installed-Size: every file in KiB rounded up, 1 per directory (dpkg-gencontrol's rule).
deb_check_installed_size() {
    kib=$(find "$root" -printf '%y %s\n' | awk '$1 == "f" || $1 == "l" {k += int(($2 + 1023) / 1024); next} {k += 1} END {print k}')
    [ "$(field Installed-Size)" = "$kib" ] || fail "Installed-Size $(field Installed-Size), the files take $kib KiB"
}

# Depends: the package of every library the binaries link, and of the Paho
# libraries DLOPENER dlopen()s (their sonames are strings in the binary).
deb_check_depends() {
    local dlopener=$1 sonames dlopened so path pkg
    shift
    depends=$(field Depends)
    sonames=$(readelf -d "$@" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort -u)
    dlopened=$(grep -aoE 'libpaho-mqtt3as?\.so\.[0-9]+' "$dlopener" | sort -u)
    [ -n "$dlopened" ] || fail "no Paho soname found in ${dlopener##*/} (runtime/src/paho.c dlopen()s them)"
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
}

deb_check_depends_on() {
    local pkg
    for pkg in "$@"; do
        grep -qE "(^|, )$pkg( \(|,|$)" <<<"$depends" || fail "Depends lacks $pkg: $depends"
    done
}

# --- 2. the unit ---------------------------------------------------------------------

# verify resolves ExecStart/ExecReload and the dependencies under --root: give
# the package's tree the units (and the given files) of this system.
deb_verify_unit() {
    local verify_root=$TEST_TMP/verify-root f out
    cp -a "$root" "$verify_root"
    mkdir -p "$verify_root/lib/systemd/system"
    cp -an /lib/systemd/system/. "$verify_root/lib/systemd/system/"
    for f in "$@"; do
        mkdir -p "$verify_root${f%/*}"
        cp -a "$f" "$verify_root$f"
    done
    out=$(systemd-analyze verify --root="$verify_root" "/lib/systemd/system/$UNIT" 2>&1) || fail "systemd-analyze verify: $out"
    [ -z "$out" ] || fail "systemd-analyze verify warns: $out"
}

# --- 3. install -----------------------------------------------------------------------

deb_install() {
    say "dpkg -i ${deb##*/}"
    dpkg -i "$deb" >"$TEST_TMP/dpkg-i.log" 2>&1 || { cat "$TEST_TMP/dpkg-i.log" >&2; fail "dpkg -i failed"; }
    [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$PKG")" = "ii " ] || fail "not installed: $(dpkg-query -W -f='${db:Status-Abbrev}' "$PKG")"
}

deb_check_user() {
    local home shell
    IFS=: read -r _ _ uid gid _ home shell <<<"$(getent passwd "$PKG_USER")" || fail "no user $PKG_USER"
    [ "$uid" -lt 1000 ] || fail "$PKG_USER is not a system user (uid $uid)"
    [ "$home" = "$PKG_DATA" ] || fail "$PKG_USER's home is $home"
    [ "$shell" = /usr/sbin/nologin ] || fail "$PKG_USER's shell is $shell"
    [ "$(getent group "$PKG_USER" | cut -d: -f3)" = "$gid" ] || fail "$PKG_USER's primary group is not $PKG_USER"
}

deb_check_installed_unit() {
    local out
    [ -L "/etc/systemd/system/multi-user.target.wants/$UNIT" ] || fail "$UNIT is not enabled"
    out=$(systemd-analyze verify "/lib/systemd/system/$UNIT" 2>&1) || fail "systemd-analyze verify (installed): $out"
    [ -z "$out" ] || fail "systemd-analyze verify (installed) warns: $out"
}

# shellcheck disable=SC2034 # systemd_here is read by the caller
deb_systemd_here() {
    if [ -d /run/systemd/system ] && [ "$(ps -o comm= -p 1)" = systemd ]; then
        systemd_here=1
        return 0
    fi
    say "systemd is not PID 1 here (PID 1 is $(ps -o comm= -p 1)): postinst enabled $UNIT but did not start it"
    systemd_here=0
    return 1
}

# SIGTERM (the unit's KillSignal) to $DEB_PID: it must exit 0.
deb_stop() {
    local rc=0
    kill -TERM "$DEB_PID"
    wait "$DEB_PID" || rc=$?
    DEB_PID=
    [ "$rc" -eq 0 ] || { tail "$2" >&2; fail "$1 exited with $rc on SIGTERM"; }
}

# --- 4. upgrade (the same .deb again), remove, purge ----------------------------------

deb_reinstall() {
    say "dpkg -i again (upgrade path)"
    dpkg -i "$deb" >"$TEST_TMP/dpkg-i2.log" 2>&1 || { cat "$TEST_TMP/dpkg-i2.log" >&2; fail "installing over itself failed"; }
    [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$PKG")" = "ii " ] || fail "not installed after the upgrade"
    [ "$(getent passwd "$PKG_USER" | cut -d: -f3)" = "$uid" ] || fail "the user $PKG_USER changed"
}

deb_remove() {
    say "dpkg -r"
    dpkg -r "$PKG" >"$TEST_TMP/dpkg-r.log" 2>&1 || { cat "$TEST_TMP/dpkg-r.log" >&2; fail "dpkg -r failed"; }
    [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$PKG")" = "rc " ] || fail "after dpkg -r: $(dpkg-query -W -f='${db:Status-Abbrev}' "$PKG")"
}

deb_purge() {
    local status
    say "dpkg -P"
    dpkg -P "$PKG" >"$TEST_TMP/dpkg-p.log" 2>&1 || { cat "$TEST_TMP/dpkg-p.log" >&2; fail "dpkg -P failed"; }
    status=$(dpkg-query -W -f='${db:Status-Status}' "$PKG" 2>/dev/null || true)
    [ -z "$status" ] || [ "$status" = not-installed ] || fail "after dpkg -P: $status"
    [ ! -e "$PKG_DATA" ] || fail "dpkg -P left $PKG_DATA"
    [ ! -e "$PKG_ETC" ] || fail "dpkg -P left $PKG_ETC"
    getent passwd "$PKG_USER" >/dev/null && fail "dpkg -P left the user $PKG_USER"
    getent group "$PKG_USER" >/dev/null && fail "dpkg -P left the group $PKG_USER"
    snapshot >"$TEST_TMP/after"
    diff -u "$TEST_TMP/before" "$TEST_TMP/after" >&2 || fail "the machine differs from before the test (users, groups, units)"
}

# --- 5. the unit under systemd, in a throwaway container --------------------------------
# The container: PID 1 is systemd in new mount, PID, network, UTS, IPC and
# cgroup namespaces; / is an overlay of this machine's / with a tmpfs on
# top, so installing and purging there changes nothing here. /proc/sys and
# /sys are read-only, units that touch the kernel's global settings
# (sysctl, modules, udev, the clock, timers) are masked, and the network
# has only its own loopback (with a mosquitto on 127.0.0.1:1883). It lives in
# a cgroup of its own, removed after.

container_skip() {
    say "systemd container skipped: $*"
    pass
}

# ct CMD...: runs CMD inside the container.
ct() { nsenter -t "$CT_PID1" -m -u -i -n -p -- "$@"; }
ct_status() { ct cat "/proc/$1/status"; }
ct_fail() {
    ct journalctl -b --no-pager -o short-monotonic 2>/dev/null | tail -60 >&2 || true
    fail "container: $*"
}
# shellcheck disable=SC2317 # run through wait_for
ct_active() { [ "$(ct systemctl is-active "$UNIT" 2>/dev/null)" = active ]; }

# shellcheck disable=SC2317 # run through wait_for
ct_up() {
    local state
    CT_PID1=$(pgrep -P "$CT_UNSHARE" | sed -n 1p) || return 1
    [ "$(ps -o comm= -p "$CT_PID1")" = systemd ] || return 1
    state=$(ct systemctl is-system-running 2>/dev/null || true)
    [ "$state" = running ] || [ "$state" = degraded ]
}

container_start() {
    local cgroup_name=$1 description=$2 keep=${3:-} prepare tool cg2 own ct_dir wants
    prepare=$(cat)
    [ "${WISP_TEST_CONTAINER:-1}" != 0 ] || container_skip "WISP_TEST_CONTAINER=0"
    for tool in unshare nsenter pivot_root findmnt pgrep; do
        command -v "$tool" >/dev/null || container_skip "$tool is not installed"
    done
    [ -x /lib/systemd/systemd ] || container_skip "no /lib/systemd/systemd"
    grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || container_skip "no overlayfs in this kernel"
    grep -qw overlay /proc/filesystems || container_skip "no overlayfs in this kernel"
    cg2=$(findmnt -n -t cgroup2 -o TARGET | sed -n 1p)
    [ -n "$cg2" ] || container_skip "no cgroup2 hierarchy mounted"
    own=$(sed -n 's/^0:://p' /proc/self/cgroup)
    CT_CGROUP=$cg2${own%/}/$cgroup_name
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
    if [ -n "$keep" ]; then
        wants="# Only $keep and what the test adds: no other services of the host.
find \"\$R/etc/systemd/system/multi-user.target.wants\" -mindepth 1 ! -name $keep -delete"
    else
        wants="# No services of the host.
find \"\$R/etc/systemd/system/multi-user.target.wants\" -mindepth 1 -delete 2>/dev/null || true"
    fi
    cat >"$TEST_TMP/ct-init.sh" <<EOF
#!/bin/bash
# PID 1 of the container's namespaces until it execs systemd.
set -euo pipefail
mount -t tmpfs -o mode=0755 wisp-test "$ct_dir"
mkdir "$ct_dir/upper" "$ct_dir/work" "$ct_dir/root"
mount -t overlay overlay -o lowerdir=/,upperdir="$ct_dir/upper",workdir="$ct_dir/work" "$ct_dir/root"
R="$ct_dir/root"
$prepare
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
Description=$description
Wants=wisp-test-broker.service multi-user.target
UNIT
$wants
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
    if ! wait_for 180 "systemd in the container to finish booting" ct_up; then
        kill -0 "$CT_UNSHARE" 2>/dev/null || container_skip "the container did not start: $(tail -3 "$TEST_TMP/ct.log" | tr '\n' ' ')"
        cat "$TEST_TMP/ct.log" "$TEST_TMP/console.log" >&2
        fail "systemd in the container did not finish booting"
    fi
}

# Stops the throwaway systemd container, if one runs, and removes its cgroup.
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

# The service's main process as systemd runs it: user, no_new_privs, seccomp,
# no capabilities.
ct_check_hardened() {
    local pid=$1 name=$2
    [ "$(ct_status "$pid" | awk '/^Uid:/ {print $2}')" = "$(ct id -u "$PKG_USER")" ] || ct_fail "$name does not run as $PKG_USER"
    [ "$(ct_status "$pid" | awk '/^NoNewPrivs:/ {print $2}')" = 1 ] || ct_fail "no_new_privs is not set"
    [ "$(ct_status "$pid" | awk '/^Seccomp:/ {print $2}')" = 2 ] || ct_fail "no seccomp filter on $name"
    [ "$(ct_status "$pid" | awk '/^CapEff:/ {print $2}')" = 0000000000000000 ] || ct_fail "$name has capabilities"
}

# Purge with systemd running: prerm stops the service, postrm cleans up.
ct_purge() {
    ct dpkg -P "$PKG" >"$TEST_TMP/ct-purge.log" 2>&1 || { cat "$TEST_TMP/ct-purge.log" >&2; ct_fail "dpkg -P failed"; }
    [ "$(ct systemctl is-active "$UNIT" 2>/dev/null || true)" != active ] || ct_fail "$UNIT still active after purge"
    ct getent passwd "$PKG_USER" >/dev/null && ct_fail "the user $PKG_USER is left after purge"
    ct test -e "$PKG_DATA" && ct_fail "$PKG_DATA is left after purge"
    say "container: dpkg -P stopped the service and removed everything"
}
