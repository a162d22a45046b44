#!/usr/bin/env bash
# Packs a slot's two filesystem images into a signed RAUC bundle (dm-verity format).
#
#   make-bundle.sh --rootfs ROOTFS.ext4 --boot BOOT.vfat --compatible NAME --version VERSION
#                  --key KEY.pem --cert CERT.pem --out BUNDLE.raucb
#
# The device installs it only if its signature chains to the keyring in the image
# (/etc/rauc/keyring.pem) and NAME equals the image's compatible string.
set -euo pipefail
usage() { sed -n '4,5p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
rootfs="" boot="" compatible="" version="" key="" cert="" out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rootfs) rootfs=$2; shift 2 ;;
    --boot) boot=$2; shift 2 ;;
    --compatible) compatible=$2; shift 2 ;;
    --version) version=$2; shift 2 ;;
    --key) key=$2; shift 2 ;;
    --cert) cert=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "make-bundle: unknown argument $1" >&2; usage ;;
  esac
done
for v in rootfs boot compatible version key cert out; do
  [ -n "${!v}" ] || { echo "make-bundle: --$v is required" >&2; usage; }
done
# Semantic versions (1.4.0, 1.5.0-rc1): update servers such as goosebit order and match by them.
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$ ]] \
  || { echo "make-bundle: --version $version is not a semantic version like 1.4.0" >&2; exit 2; }
for f in "$rootfs" "$boot" "$key" "$cert"; do
  [ -f "$f" ] || { echo "make-bundle: $f: no such file" >&2; exit 1; }
done
command -v rauc >/dev/null || { echo "make-bundle: rauc missing: apt-get install rauc squashfs-tools" >&2; exit 1; }

content=$(mktemp -d "${TMPDIR:-/tmp}/blurcam-bundle.XXXXXX")
trap 'rm -rf "$content"' EXIT
# Hard links where possible: the images are hundreds of MB.
ln "$rootfs" "$content/rootfs.ext4" 2>/dev/null || cp "$rootfs" "$content/rootfs.ext4"
ln "$boot" "$content/boot.vfat" 2>/dev/null || cp "$boot" "$content/boot.vfat"
cat > "$content/manifest.raucm" <<MANIFEST
[update]
compatible=$compatible
version=$version
description=BlurCam $version

[bundle]
format=verity

[image.rootfs]
filename=rootfs.ext4

[image.boot]
filename=boot.vfat
MANIFEST
rm -f "$out"
rauc bundle --cert="$cert" --key="$key" "$content" "$out" >&2
echo "make-bundle: $out (compatible $compatible, version $version)" >&2
