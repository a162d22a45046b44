#!/usr/bin/env bash
# Offline variant, layer 1: a Debian trixie arm64 root filesystem with the core packages
# (packages/common.txt + packages/offline.txt), from Debian's archive alone. Slow under qemu-user
# (about an hour on a 2-core machine), so cached as a tarball keyed by those lists and this file;
# packages added later go to packages/extra.txt (scripts/extra-layer.sh), which leaves this
# layer's key alone. Prints the tarball's path.
source "$(dirname "$0")/common.sh"
require_root "building the arm64 rootfs"

lists=("$IMAGE_BUILD_DIR/packages/common.txt" "$IMAGE_BUILD_DIR/packages/offline.txt")
key=$(hash_files "${lists[@]}" "$0" <(echo "$SUITE"))
tarball="$CACHE_DIR/rootfs-$SUITE-arm64-$key.tar"
if [ -f "$tarball" ]; then
  log "base rootfs: cached ($tarball)"
  echo "$tarball"; exit 0
fi

ensure_binfmt_aarch64
command -v mmdebstrap >/dev/null || die "mmdebstrap missing: apt-get install mmdebstrap"
mkdir -p "$CACHE_DIR"
mirror=$(debian_mirror)
log "base rootfs: mmdebstrap $SUITE arm64 (cold: about an hour under qemu-user)"
start=$(date +%s)
# No man pages, translations or docs on a webcam; licence texts stay. INITRD=No stops the kernel
# package's own initramfs run; the customize hook makes the one initramfs once, at the end (the
# package triggers would otherwise build it twice, the slowest step under emulation).
INITRD=No mmdebstrap --architectures=arm64 --variant=apt --components=main \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --include="$(package_list "${lists[@]}" | paste -sd,)" \
  --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
  --customize-hook='for k in "$1"/boot/vmlinuz-*; do v=${k##*/vmlinuz-}; [ -e "$1/boot/initrd.img-$v" ] || chroot "$1" update-initramfs -c -k "$v"; done' \
  "$SUITE" "${tarball%.tar}.partial.tar" "deb $mirror $SUITE main" >&2
mv "${tarball%.tar}.partial.tar" "$tarball"
find "$CACHE_DIR" -maxdepth 1 -name "rootfs-$SUITE-arm64-*.tar" ! -name "$(basename "$tarball")" -delete
log "base rootfs: built in $(( $(date +%s) - start )) s"
echo "$tarball"
