#!/bin/sh
# A slot's boot partition tree, after configure-boot.sh: cmdline.txt names its slot (rauc.slot=,
# which RAUC reads to know the running slot; the Pi 4/5 firmware boots this file directly), and
# cmdline.env holds the same arguments, minus root= and rauc.slot=, for U-Boot's boot.scr, which
# adds the slot's own (uboot/boot.cmd).
# usage: slot-boot-files.sh BOOT_DIR A|B
set -eu
boot=${1:?usage: $0 BOOT_DIR A|B}
slot=${2:?usage: $0 BOOT_DIR A|B}
args=$(tr '\n' ' ' < "$boot/cmdline.txt" | sed -e 's/rauc\.slot=[^ ]*//g' -e 's/  */ /g' -e 's/^ //' -e 's/ $//')
echo "$args rauc.slot=$slot" > "$boot/cmdline.txt"
echo "blurcam_cmdline=$(echo "$args" | sed -e 's/root=[^ ]*//g' -e 's/rootwait//g' -e 's/  */ /g' -e 's/^ //' -e 's/ $//')" \
  > "$boot/cmdline.env"
