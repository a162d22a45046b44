#!/usr/bin/env bash
# The U-Boot side of A/B boot selection, for the boot partition (p1): boot.scr (the platform part
# + uboot/boot.cmd, compiled with mkimage) and bootslot.env, the slot state U-Boot and Linux share
# (slot A good, slot B empty until the first update).
# usage: make-boot-files.sh qemu|rpi-zero2w OUT_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
platform=${1:?usage: $0 qemu|rpi-zero2w OUT_DIR}
out=${2:?usage: $0 qemu|rpi-zero2w OUT_DIR}
[ -f "$here/uboot/$platform.cmd" ] || { echo "make-boot-files: unknown platform $platform" >&2; exit 2; }
for tool in mkimage mkenvimage; do
  command -v "$tool" >/dev/null || { echo "make-boot-files: $tool missing: apt-get install u-boot-tools" >&2; exit 1; }
done
mkdir -p "$out"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cat "$here/uboot/$platform.cmd" "$here/uboot/boot.cmd" > "$tmp/boot.cmd"
mkimage -q -A arm64 -O linux -T script -C none -n "BlurCam A/B boot ($platform)" -d "$tmp/boot.cmd" "$out/boot.scr"
# 0x4000 bytes, CRC32 first: the format of U-Boot's `env export -c -s 0x4000` and of libubootenv.
printf 'BOOT_ORDER=A B\nBOOT_A_LEFT=3\nBOOT_B_LEFT=0\n' > "$tmp/env.txt"
mkenvimage -s 0x4000 -o "$out/bootslot.env" "$tmp/env.txt"
