#!/bin/sh
# Boot configuration of a BlurCam image: USB device mode, hardware watchdog, quiet fast boot.
# SHARED by both builds; edits config.txt and cmdline.txt in place (idempotent), keeping
# whatever else the base system put there (e.g. Raspberry Pi OS's root=PARTUUID=...).
# usage: configure-boot.sh BOOT_DIR   (the boot partition's tree, /boot/firmware)
set -eu
boot=${1:?usage: $0 BOOT_DIR}
config=$boot/config.txt
cmdline=$boot/cmdline.txt
[ -f "$config" ] && [ -f "$cmdline" ] || { echo "configure-boot: $boot lacks config.txt or cmdline.txt" >&2; exit 1; }

sed -i '/^# --- BlurCam begin/,/^# --- BlurCam end/d' "$config"
cat >> "$config" <<'BLOCK'
# --- BlurCam begin (image-build/scripts/configure-boot.sh) ---
[all]
# The OTG port in USB device mode: the Pi is the webcam, the computer is the host.
dtoverlay=dwc2,dr_mode=peripheral
# Hardware watchdog, pinged by systemd (RuntimeWatchdogSec).
dtparam=watchdog=on
camera_auto_detect=1
display_auto_detect=0
disable_splash=1
boot_delay=0
# --- BlurCam end ---
BLOCK

# One line: drop the splash screen, keep the console quiet, keep everything else.
line=$(tr '\n' ' ' < "$cmdline")
out=""
for word in $line; do
  case "$word" in
    quiet|splash|loglevel=*|logo.nologo|plymouth.*|systemd.show_status=*) ;;
    *) out="$out $word" ;;
  esac
done
echo "${out# } quiet loglevel=3 logo.nologo systemd.show_status=auto" > "$cmdline"
