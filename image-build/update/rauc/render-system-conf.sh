#!/bin/sh
# RAUC's system.conf for one slot switch: render-system-conf.sh uboot|tryboot COMPATIBLE PART_PREFIX
# (PART_PREFIX: /dev/mmcblk0p on a Pi, /dev/vda in the QEMU VM). Prints it.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
backend=${1:?usage: $0 uboot|tryboot COMPATIBLE PART_PREFIX}
compatible=${2:?usage: $0 uboot|tryboot COMPATIBLE PART_PREFIX}
part=${3:?usage: $0 uboot|tryboot COMPATIBLE PART_PREFIX}
case "$backend" in
  uboot) bootloader=uboot custom="" uboot_lines='s/^@UBOOT@//' ;;
  tryboot) bootloader=custom custom="bootloader-custom-backend=/usr/lib/blurcam/rauc-tryboot" uboot_lines='/^@UBOOT@/d' ;;
  *) echo "render-system-conf: backend must be uboot or tryboot, not $backend" >&2; exit 2 ;;
esac
sed -e "$uboot_lines" -e "s|@COMPATIBLE@|$compatible|" -e "s|@BOOTLOADER@|$bootloader|" \
    -e "s|@CUSTOM_BACKEND@|$custom|" -e "s|@PART@|$part|g" "$here/system.conf.in"
