#!/usr/bin/env bash
# firmware/make-overlay.sh on scratch directories (no root needed):
#  - applied to an empty tree: exactly the package, the first boot script and
#    its unit (enabled), with their modes; the unit passes systemd-analyze
#    verify with the tree as root (plus this system's standard units, as a
#    Raspberry Pi OS root has them);
#  - idempotent: a second run leaves the same tree; a newer package replaces
#    the older one;
#  - refuses bad usage with a clear message: missing arguments (exit 2), a
#    missing or foreign package, a missing root, / itself, a package for
#    another architecture than the target's dpkg (exit 1);
#  - the first boot script against the tree, with apt-get and systemctl
#    replaced by recorders: installs the package, runs /usr/lib/wisp/provision
#    (as owner wisp) only when present and then restarts wispd, disables its
#    unit only when everything succeeded.
# The package is a stand-in built with dpkg-deb (WISP_DEB: a real one).
set -euo pipefail
: "${WISP_SOURCE_DIR:?}"
# shellcheck source-path=SCRIPTDIR source=../lib/broker.sh
source "$WISP_SOURCE_DIR/tests/lib/broker.sh"
test_tmp_init

make_overlay=$WISP_SOURCE_DIR/firmware/make-overlay.sh
overlay_src=$WISP_SOURCE_DIR/firmware/overlay
command -v dpkg-deb >/dev/null || {
    echo "SKIP: overlay: dpkg-deb is not installed"
    exit 77
}
command -v systemd-analyze >/dev/null || {
    echo "SKIP: overlay: systemd-analyze is not installed"
    exit 77
}

# fake_deb NAME VERSION ARCH: a minimal package in $TEST_TMP/debs.
fake_deb() {
    local d=$TEST_TMP/debsrc/$1-$2-$3
    mkdir -p "$d/DEBIAN" "$TEST_TMP/debs"
    printf 'Package: %s\nVersion: %s\nArchitecture: %s\nMaintainer: test <test@example.invalid>\nDescription: stand-in\n' \
        "$1" "$2" "$3" >"$d/DEBIAN/control"
    dpkg-deb --root-owner-group --build "$d" "$TEST_TMP/debs/$1_$2_$3.deb" >/dev/null
    echo "$TEST_TMP/debs/$1_$2_$3.deb"
}
# A deterministic listing of a tree: type, mode, path, link target, content hash.
listing() {
    (cd "$1" && find . -printf '%y %m %p %l\n' | sort &&
        find . -type f -exec md5sum {} + | sort -k2)
}
# expect_fail STATUS PATTERN ARGS...: make-overlay.sh exits STATUS and says PATTERN.
expect_fail() {
    local want=$1 pattern=$2 rc=0
    shift 2
    "$make_overlay" "$@" >"$TEST_TMP/out" 2>&1 || rc=$?
    [ "$rc" -eq "$want" ] || fail "make-overlay.sh $*: exit $rc, expected $want: $(cat "$TEST_TMP/out")"
    grep -q -- "$pattern" "$TEST_TMP/out" || fail "make-overlay.sh $*: no '$pattern' in: $(cat "$TEST_TMP/out")"
}

if [ -n "${WISP_DEB:-}" ]; then
    deb=$WISP_DEB
else
    deb=$(fake_deb wisp 0.1.0 arm64)
fi
# shellcheck disable=SC2016 # dpkg-deb's field names
read -r version arch <<<"$(dpkg-deb --show --showformat='${Version} ${Architecture}' "$deb")"
deb_name=wisp_${version}_${arch}.deb

# --- an empty tree --------------------------------------------------------------------
root=$TEST_TMP/root
mkdir "$root"
"$make_overlay" --deb "$deb" --rootfs "$root" >"$TEST_TMP/out" 2>&1 || fail "make-overlay.sh: $(cat "$TEST_TMP/out")"
grep -q "applied to $root" "$TEST_TMP/out" || fail "no summary line: $(cat "$TEST_TMP/out")"
cat >"$TEST_TMP/expected" <<EOF
d 755 ./etc
d 755 ./etc/systemd
d 755 ./etc/systemd/system
d 755 ./etc/systemd/system/multi-user.target.wants
l 777 ./etc/systemd/system/multi-user.target.wants/wisp-firstboot.service ../wisp-firstboot.service
f 644 ./etc/systemd/system/wisp-firstboot.service
d 755 ./usr
d 755 ./usr/local
d 755 ./usr/local/sbin
f 755 ./usr/local/sbin/wisp-firstboot
d 755 ./var
d 755 ./var/lib
d 755 ./var/lib/wisp-firstboot
f 644 ./var/lib/wisp-firstboot/$deb_name
EOF
(cd "$root" && find . -mindepth 1 -printf '%y %m %p %l\n' | sed 's/ $//' | sort -k3) >"$TEST_TMP/got"
diff -u "$TEST_TMP/expected" "$TEST_TMP/got" >&2 || fail "the tree differs from the expected files and modes"
cmp -s "$deb" "$root/var/lib/wisp-firstboot/$deb_name" || fail "the package was not copied as it is"
cmp -s "$overlay_src/usr/local/sbin/wisp-firstboot" "$root/usr/local/sbin/wisp-firstboot" || fail "wisp-firstboot differs"
cmp -s "$overlay_src/etc/systemd/system/wisp-firstboot.service" "$root/etc/systemd/system/wisp-firstboot.service" ||
    fail "wisp-firstboot.service differs"
if [ "$(id -u)" -eq 0 ]; then
    [ -z "$(find "$root" ! -user root)" ] || fail "files not owned by root: $(find "$root" ! -user root)"
fi

# The unit, verified with the tree as root; the standard units come from this
# system, as a Raspberry Pi OS root has its own.
vroot=$TEST_TMP/verify-root
cp -a "$root" "$vroot"
mkdir -p "$vroot/usr/lib/systemd"
cp -a /usr/lib/systemd/system "$vroot/usr/lib/systemd/"
ln -s usr/lib "$vroot/lib"
out=$(systemd-analyze verify --root="$vroot" /etc/systemd/system/wisp-firstboot.service 2>&1) ||
    fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify warns: $out"
grep -qx 'Type=oneshot' "$root/etc/systemd/system/wisp-firstboot.service" || fail "wisp-firstboot.service is not a oneshot"
grep -qx 'ConditionPathExistsGlob=/var/lib/wisp-firstboot/wisp_\*.deb' "$root/etc/systemd/system/wisp-firstboot.service" ||
    fail "wisp-firstboot.service does not wait for the package"

# --- idempotence; a newer package replaces the old one -------------------------------------
listing "$root" >"$TEST_TMP/first"
"$make_overlay" --deb "$deb" --rootfs "$root" >/dev/null 2>&1 || fail "second run failed"
listing "$root" >"$TEST_TMP/second"
diff -u "$TEST_TMP/first" "$TEST_TMP/second" >&2 || fail "a second run changed the tree"
newer=$(fake_deb wisp 0.2.0 "$arch")
"$make_overlay" --deb "$newer" --rootfs "$root" >/dev/null 2>&1 || fail "run with a newer package failed"
debs=$(cd "$root/var/lib/wisp-firstboot" && ls)
[ "$debs" = "wisp_0.2.0_$arch.deb" ] || fail "after a newer package, the directory holds: $debs"
# A file named otherwise is installed under its package's name.
cp "$deb" "$TEST_TMP/renamed.deb"
"$make_overlay" --deb "$TEST_TMP/renamed.deb" --rootfs "$root" >/dev/null 2>&1 || fail "run with a renamed file failed"
[ "$(cd "$root/var/lib/wisp-firstboot" && ls)" = "$deb_name" ] || fail "a renamed package was not stored as $deb_name"

# --- bad usage --------------------------------------------------------------------------------
expect_fail 2 'usage:'
expect_fail 2 'usage:' --deb "$deb"
expect_fail 2 'usage:' --rootfs "$root"
expect_fail 2 'unknown argument: --bogus' --deb "$deb" --rootfs "$root" --bogus
expect_fail 1 'no such package file' --deb "$TEST_TMP/none.deb" --rootfs "$root"
echo 'not a package' >"$TEST_TMP/text.deb"
expect_fail 1 'is not a Debian package' --deb "$TEST_TMP/text.deb" --rootfs "$root"
expect_fail 1 "is package 'other', not wisp" --deb "$(fake_deb other 1.0 arm64)" --rootfs "$root"
expect_fail 1 'no such directory' --deb "$deb" --rootfs "$TEST_TMP/missing"
expect_fail 1 'refusing to write into /' --deb "$deb" --rootfs /
# A target whose dpkg is an x86-64 or an AArch64 program (its ELF header decides).
case $(od -An -tu2 -j18 -N2 /bin/true | tr -d ' ') in
    62) host_arch=amd64 other_arch=arm64 ;;
    183) host_arch=arm64 other_arch=amd64 ;;
    *) host_arch= ;;
esac
if [ -n "$host_arch" ]; then
    target=$TEST_TMP/target
    mkdir -p "$target/usr/bin"
    cp /bin/true "$target/usr/bin/dpkg"
    foreign=$(fake_deb wisp 0.1.0 "$other_arch")
    expect_fail 1 "is for $other_arch but the target's dpkg is $host_arch" --deb "$foreign" --rootfs "$target"
    [ ! -e "$target/var/lib/wisp-firstboot" ] || fail "a refused run wrote into the target"
    "$make_overlay" --deb "$foreign" --rootfs "$target" --force-arch >"$TEST_TMP/out" 2>&1 || fail "--force-arch: $(cat "$TEST_TMP/out")"
    grep -q 'warning:' "$TEST_TMP/out" || fail "--force-arch gave no warning"
    "$make_overlay" --deb "$(fake_deb wisp 0.1.0 "$host_arch")" --rootfs "$target" >/dev/null 2>&1 ||
        fail "a package for the target's architecture was refused"
fi

# --- the first boot script, with apt-get and systemctl recorded -------------------------------------
stubs=$TEST_TMP/stubs
mkdir -p "$stubs"
# Each stub appends its command line to $TEST_TMP/calls and fails when its
# first argument equals $FAIL_<tool> (FAIL_apt_get=install, ...).
for tool in apt-get systemctl; do
    cat >"$stubs/$tool" <<STUB
#!/bin/sh
echo "$tool \$*" >>"\$TEST_TMP/calls"
[ "\$1" != "\${FAIL_${tool//-/_}:-}" ]
STUB
    chmod +x "$stubs/$tool"
done
firstboot() {
    : >"$TEST_TMP/calls"
    env PATH="$stubs:$PATH" TEST_TMP="$TEST_TMP" WISP_FIRSTBOOT_ROOT="$root" "$@" \
        sh "$root/usr/local/sbin/wisp-firstboot" >"$TEST_TMP/fb.out" 2>&1
}
firstboot || fail "wisp-firstboot: $(cat "$TEST_TMP/fb.out")"
cat >"$TEST_TMP/expected" <<EOF
apt-get update -q
apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold $root/var/lib/wisp-firstboot/$deb_name
systemctl disable wisp-firstboot.service
EOF
diff -u "$TEST_TMP/expected" "$TEST_TMP/calls" >&2 || fail "wisp-firstboot ran other commands"
grep -q 'provisioning skipped' "$TEST_TMP/fb.out" || fail "no note that provisioning was skipped"
# With a provisioning program: it runs after the install, before the unit is disabled.
mkdir -p "$root/usr/lib/wisp"
# shellcheck disable=SC2016 # expanded by the stub
printf '#!/bin/sh\necho "provision $*" >>"$TEST_TMP/calls"\n' >"$root/usr/lib/wisp/provision"
chmod +x "$root/usr/lib/wisp/provision"
firstboot || fail "wisp-firstboot with provisioning: $(cat "$TEST_TMP/fb.out")"
[ "$(sed -n '3,5p' "$TEST_TMP/calls")" = "provision --owner wisp
systemctl try-restart wispd.service
systemctl disable wisp-firstboot.service" ] || fail "provision, restart, disable expected after the install: $(cat "$TEST_TMP/calls")"
# A failing provisioning program, or a failed install: exit non-zero, unit left enabled.
printf '#!/bin/sh\nexit 3\n' >"$root/usr/lib/wisp/provision"
firstboot && fail "wisp-firstboot succeeded although provisioning failed"
grep -q 'systemctl disable' "$TEST_TMP/calls" && fail "disabled although provisioning failed"
rm -rf "$root/usr/lib/wisp"
firstboot FAIL_apt_get=install && fail "wisp-firstboot succeeded although apt-get install failed"
grep -q 'systemctl disable' "$TEST_TMP/calls" && fail "disabled although the install failed"
# A failed update alone is not fatal: the install decides.
firstboot FAIL_apt_get=update || fail "a failed apt-get update stopped wisp-firstboot: $(cat "$TEST_TMP/fb.out")"
grep -qx 'systemctl disable wisp-firstboot.service' "$TEST_TMP/calls" || fail "not disabled after a failed update and a good install"
# No package: nothing to do, and the unit stays enabled.
rm -f "$root/var/lib/wisp-firstboot/"*.deb
firstboot && fail "wisp-firstboot succeeded without a package"
grep -q 'no wisp_\*.deb' "$TEST_TMP/fb.out" || fail "no message about the missing package: $(cat "$TEST_TMP/fb.out")"
pass
