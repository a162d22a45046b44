#!/usr/bin/env bash
# Offline variant, layer 2: the base root filesystem (base-rootfs.sh) plus packages/extra.txt,
# installed with apt inside it under qemu-user. A few minutes instead of the base's hour, so a
# package added to extra.txt never rebuilds the base. Cached as a tarball keyed by the base's
# key, extra.txt and this file. With no extra packages the base tarball itself is the result.
# usage: extra-layer.sh BASE_TARBALL    -> prints the tarball's path
source "$(dirname "$0")/common.sh"
require_root "installing packages into the arm64 rootfs"
base=${1:?usage: $0 BASE_TARBALL}
list=$IMAGE_BUILD_DIR/packages/extra.txt
mapfile -t packages < <(package_list "$list")
if [ ${#packages[@]} -eq 0 ]; then
  echo "$base"; exit 0
fi
key=$( { basename "$base"; cat "$list" "$0"; } | sha256sum | cut -c1-16)
tarball=$CACHE_DIR/rootfs-extra-$key.tar
if [ -f "$tarball" ]; then
  log "extra packages layer: cached ($tarball)"
  echo "$tarball"; exit 0
fi

ensure_binfmt_aarch64
work=$(mktemp -d "$CACHE_DIR/extra-layer.XXXXXX")
# Only this script's own scratch directory, also when a step fails, and never while anything
# is still mounted under it (in_rootfs binds the host's /dev and /sys there).
trap 'remove_scratch "$work" "$CACHE_DIR/extra-layer."' EXIT
root=$work/root
mkdir "$root"
log "extra packages layer: ${packages[*]}"
tar -C "$root" --numeric-owner -xpf "$base"
# The base keeps mmdebstrap's sources.list (the archive it came from) and its dpkg excludes
# (no man pages or docs); a resolver for apt inside the chroot only while installing.
[ -s "$root/etc/apt/sources.list" ] || echo "deb $(debian_mirror) $SUITE main" > "$root/etc/apt/sources.list"
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
# apt's log goes to stderr: this script's stdout is only the tarball's path (build-offline.sh reads it).
in_rootfs "$root" env DEBIAN_FRONTEND=noninteractive INITRD=No sh -c \
  "apt-get update -q && apt-get install -y -q --no-install-recommends ${packages[*]} && apt-get clean" >&2
rm -rf "$root"/var/lib/apt/lists/* "$root"/etc/resolv.conf "$root"/etc/ssh/ssh_host_*
tar -C "$root" --numeric-owner -cpf "$tarball.partial" .
mv "$tarball.partial" "$tarball"
find "$CACHE_DIR" -maxdepth 1 -name 'rootfs-extra-*.tar' ! -name "$(basename "$tarball")" -delete
echo "$tarball"
