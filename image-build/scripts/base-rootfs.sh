#!/usr/bin/env bash
# Offline variant, step 1: a Debian trixie arm64 root filesystem with every package the image needs,
# from Debian's archive alone. Slow under qemu-user, so cached as a tarball keyed by the recipe.
# Prints the tarball's path.
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
log "base rootfs: mmdebstrap $SUITE arm64 (cold: several minutes under qemu-user)"
start=$(date +%s)
# No man pages, translations or docs on a webcam; licence texts stay.
mmdebstrap --architectures=arm64 --variant=apt --components=main \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --include="$(package_list "${lists[@]}" | paste -sd,)" \
  --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
  "$SUITE" "${tarball%.tar}.partial.tar" "deb $mirror $SUITE main" >&2
mv "${tarball%.tar}.partial.tar" "$tarball"
find "$CACHE_DIR" -maxdepth 1 -name "rootfs-$SUITE-arm64-*.tar" ! -name "$(basename "$tarball")" -delete
log "base rootfs: built in $(( $(date +%s) - start )) s"
echo "$tarball"
