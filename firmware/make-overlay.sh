#!/usr/bin/env bash
# Applies the Wisp rootfs overlay to a Raspberry Pi OS Lite (64-bit) root
# filesystem: a mounted image's root partition, or any directory (a scratch
# directory shows what would be written).
#
#   firmware/make-overlay.sh --deb build/wisp_0.1.0_arm64.deb --rootfs /mnt/pi-root
#
# Writes, relative to the root:
#   var/lib/wisp-firstboot/wisp_<version>_<arch>.deb   the package (older ones removed)
#   usr/local/sbin/wisp-firstboot                      installs it on first boot
#   etc/systemd/system/wisp-firstboot.service          the oneshot unit, enabled through
#   etc/systemd/system/multi-user.target.wants/wisp-firstboot.service
# Nothing else is touched. Applying it again gives the same tree.
#
# Exit status: 0 applied, 1 failed, 2 usage.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
overlay=$here/overlay
me=${0##*/}

usage() {
    cat >&2 <<EOF
usage: $me --deb FILE --rootfs DIR [--force-arch]

  --deb FILE     the wisp package (wisp_<version>_<arch>.deb, built with cpack)
  --rootfs DIR   root of the target file system: a mounted image's root
                 partition, or any directory (an empty one for a dry run)
  --force-arch   install even when the package's architecture differs from
                 the one of the target's dpkg
EOF
    exit 2
}
die() {
    echo "$me: $*" >&2
    exit 1
}

deb='' rootfs='' force_arch=0
while [ $# -gt 0 ]; do
    case $1 in
        --deb)
            [ $# -ge 2 ] || usage
            deb=$2
            shift 2
            ;;
        --rootfs)
            [ $# -ge 2 ] || usage
            rootfs=$2
            shift 2
            ;;
        --force-arch)
            force_arch=1
            shift
            ;;
        -h | --help) usage ;;
        *)
            echo "$me: unknown argument: $1" >&2
            usage
            ;;
    esac
done
if [ -z "$deb" ] || [ -z "$rootfs" ]; then
    usage
fi

# --- the package ---------------------------------------------------------------
[ -f "$deb" ] || die "no such package file: $deb"
command -v dpkg-deb >/dev/null || die "dpkg-deb is needed to read $deb (apt-get install dpkg)"
# shellcheck disable=SC2016 # ${...} are dpkg-deb's field names
fields=$(dpkg-deb --show --showformat='${Package} ${Version} ${Architecture}' "$deb" 2>/dev/null) ||
    die "$deb is not a Debian package"
read -r pkg version arch <<<"$fields"
[ "$pkg" = wisp ] || die "$deb is package '$pkg', not wisp"
# The name first boot looks for, whatever the file was called.
deb_name=wisp_${version}_${arch}.deb

# --- the target ----------------------------------------------------------------
[ -d "$rootfs" ] || die "no such directory: $rootfs (mount the image's root partition first)"
rootfs=$(cd "$rootfs" && pwd -P)
[ "$rootfs" != / ] || die "refusing to write into / of this machine; give the root of the image"

# The architecture of the target's dpkg (from its ELF header), when it has one.
target_arch() {
    local bin=$rootfs/usr/bin/dpkg machine
    [ -f "$bin" ] || return 0
    [ "$(head -c 4 "$bin" | od -An -c | tr -d ' ')" = 177ELF ] || return 0
    machine=$(od -An -tu2 -j18 -N2 "$bin" | tr -d ' ')
    case $machine in
        183) echo arm64 ;;
        40) echo armhf ;;
        62) echo amd64 ;;
        *) echo "unknown(e_machine=$machine)" ;;
    esac
}
tarch=$(target_arch)
if [ -n "$tarch" ] && [ "$arch" != all ] && [ "$arch" != "$tarch" ]; then
    if [ "$force_arch" = 1 ]; then
        echo "$me: warning: $deb is for $arch, the target's dpkg is $tarch (--force-arch)" >&2
    else
        die "$deb is for $arch but the target's dpkg is $tarch; build the package with the target's toolchain (firmware/toolchain-aarch64.cmake for Raspberry Pi OS 64-bit) or pass --force-arch"
    fi
fi

# --- apply ---------------------------------------------------------------------
owner=()
if [ "$(id -u)" -eq 0 ]; then
    owner=(-o root -g root)
fi
put() { # put MODE SOURCE DEST (DEST relative to the root)
    install "${owner[@]}" -m "$1" -D -T "$2" "$rootfs/$3"
}
mkdirs() { # mkdirs DIR... (relative to the root); existing ones are left as they are
    local d
    for d in "$@"; do
        [ -d "$rootfs/$d" ] || (umask 022 && mkdir -p -- "$rootfs/$d")
    done
}

mkdirs var/lib/wisp-firstboot usr/local/sbin etc/systemd/system/multi-user.target.wants
for old in "$rootfs"/var/lib/wisp-firstboot/wisp_*.deb; do
    [ -e "$old" ] || continue
    [ "${old##*/}" = "$deb_name" ] || rm -f -- "$old"
done
put 0644 "$deb" "var/lib/wisp-firstboot/$deb_name"
put 0755 "$overlay/usr/local/sbin/wisp-firstboot" usr/local/sbin/wisp-firstboot
put 0644 "$overlay/etc/systemd/system/wisp-firstboot.service" etc/systemd/system/wisp-firstboot.service
# Enabled the way `systemctl enable` does it (WantedBy=multi-user.target).
ln -sfn ../wisp-firstboot.service "$rootfs/etc/systemd/system/multi-user.target.wants/wisp-firstboot.service"

echo "$me: applied to $rootfs: $deb_name ($arch${tarch:+, target $tarch}), wisp-firstboot.service enabled"
