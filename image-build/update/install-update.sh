#!/bin/sh
# Installs the A/B update machinery into the root filesystem it runs in (a chroot of the image
# being built; shared by both builds, like install-appliance.sh).
# usage: install-update.sh PAYLOAD_UPDATE_DIR offline|production
#   offline:    Debian image for the QEMU test VM (disk /dev/vda, bundles "blurcam-qemu-arm64")
#   production: Raspberry Pi OS for every Pi (disk /dev/mmcblk0, bundles "blurcam-rpi-arm64")
set -eu
P=${1:?usage: $0 PAYLOAD_UPDATE_DIR offline|production}
variant=${2:?usage: $0 PAYLOAD_UPDATE_DIR offline|production}
say() { echo "install-update: $*"; }
case "$variant" in
  offline) compatible=blurcam-qemu-arm64 part=/dev/vda ;;
  production) compatible=blurcam-rpi-arm64 part=/dev/mmcblk0p ;;
  *) echo "install-update: variant must be offline or production, not $variant" >&2; exit 2 ;;
esac
command -v rauc >/dev/null && command -v fw_setenv >/dev/null \
  || { echo "install-update: rauc and libubootenv-tool must be in the image" >&2; exit 1; }

say "RAUC for $compatible on $part*: U-Boot and tryboot configurations, picked per board at boot"
install -d /etc/rauc /usr/lib/blurcam /var/lib/rauc
sh "$P/rauc/render-system-conf.sh" uboot "$compatible" "$part" > /etc/rauc/system-uboot.conf
sh "$P/rauc/render-system-conf.sh" tryboot "$compatible" "$part" > /etc/rauc/system-tryboot.conf
ln -sf /run/blurcam/rauc/system.conf /etc/rauc/system.conf
install -m 0644 "$P/keyring.pem" /etc/rauc/keyring.pem
install -m 0755 "$P/device/rauc-config" "$P/device/rauc-tryboot" "$P/device/rauc-pre-install" \
  "$P/device/rauc-post-install" /usr/lib/blurcam/
install -D -m 0644 "$P/device/rauc-config.conf" /etc/systemd/system/rauc.service.d/blurcam.conf
# U-Boot's slot state file on the boot partition (image-build/update/uboot/boot.cmd).
echo "/boot/firmware/bootslot.env 0x0000 0x4000" > /etc/fw_env.config

say "blurcam-update-confirm.service: a slot on trial is kept only if healthy"
say "blurcam-update-request.path: updates requested on the settings page"
say "blurcam-hawkbit.service: rollouts from the fleet's server, when the fleet file names one"
/opt/blurcam/venv/bin/pip install --no-index --no-cache-dir --no-deps "$P"/wheels/rauc_hawkbit-*.whl
install -m 0644 "$P/device/blurcam-update-confirm.service" "$P/device/blurcam-update-request.path" \
  "$P/device/blurcam-update-request.service" "$P/device/blurcam-hawkbit.service" /usr/lib/systemd/system/
systemctl enable blurcam-update-confirm.service blurcam-update-request.path blurcam-hawkbit.service
# RAUC's own unit marks every boot good unconditionally, which would keep a broken update.
if [ -e /usr/lib/systemd/system/rauc-mark-good.service ] || [ -e /lib/systemd/system/rauc-mark-good.service ]; then
  systemctl mask rauc-mark-good.service
fi
if [ "$variant" = offline ]; then
  # QEMU's virt machine has no USB device controller; the kernel's dummy_hcd gives the gadget
  # one to bind to, so the health check's "gadget bound" is real in the test VM.
  # (Booted through U-Boot, the kernel arguments come from the slot, so this cannot be left to the
  # test's command line.) uvcvideo stays off the looped-back host port: the pipeline must not take
  # its own output for a camera.
  echo dummy_hcd > /etc/modules-load.d/blurcam-test-udc.conf
  echo "blacklist uvcvideo" > /etc/modprobe.d/blurcam-test-udc.conf
fi
