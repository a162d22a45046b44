#!/bin/sh
# Installs BlurCam into the root filesystem it runs in (a chroot of the image being built).
# SHARED by both builds: the offline build runs it in its Debian rootfs, the production pi-gen
# stage runs it in Raspberry Pi OS's (stage-blurcam/00-install/01-run-chroot.sh). Everything
# appliance-specific happens here or in configure-boot.sh, so what the offline test checks is
# what production ships.
# usage: install-appliance.sh PAYLOAD   (a directory made by make-payload.sh)
set -eu
P=${1:?usage: $0 PAYLOAD}
VENV=/opt/blurcam/venv
say() { echo "install-appliance: $*"; }

[ "$(uname -m)" = aarch64 ] || { echo "install-appliance: expected an aarch64 root, got $(uname -m)" >&2; exit 1; }

say "Python venv $VENV (Debian's python3 and system packages; aarch64 wheels for the rest)"
python3 -m venv --system-site-packages "$VENV"
# Only the payload's wheels: never the network, never a compiler.
"$VENV/bin/pip" install --no-index --no-cache-dir --find-links "$P/wheels" -r "$P/requirements-device.txt"
"$VENV/bin/pip" install --no-index --no-cache-dir --no-deps "$P"/wheels/blurcam-*.whl
ln -sf "$VENV/bin/blurcam" /usr/bin/blurcam
if command -v cc gcc >/dev/null 2>&1; then echo "install-appliance: a C compiler is installed" >&2; exit 1; fi

say "models -> /usr/share/blurcam/models"
install -d -m 0755 /usr/share/blurcam/models
install -m 0644 "$P"/models/*.tflite "$P/models/SHA256SUMS" /usr/share/blurcam/models/
(cd /usr/share/blurcam/models && sha256sum --quiet -c SHA256SUMS)

say "systemd units (systemd/install.sh) and the provisioning unit"
sh "$P/systemd/install.sh" /
cp -a "$P/files/." /
chmod 0440 /etc/sudoers.d/blurcam-admin
systemctl enable blurcam-provision.service blurcam-reset-flag.service
# Boot does not wait for a network the webcam does not need.
systemctl mask NetworkManager-wait-online.service systemd-networkd-wait-online.service
# No USB gadget drivers that would grab the UDC before ours.
printf 'blacklist g_ether\nblacklist g_serial\nblacklist g_mass_storage\nblacklist g_multi\n' \
  > /etc/modprobe.d/blurcam-no-legacy-gadgets.conf

say "fleet file -> /etc/blurcam/fleet.image.toml"
install -d -m 0755 /etc/blurcam
install -m 0600 "$P/fleet.toml" /etc/blurcam/fleet.image.toml
install -d -m 0755 /usr/share/doc/blurcam
install -m 0644 "$P/README.md" /usr/share/doc/blurcam/README.md

say "admin account (SSH keys from the fleet file, no password)"
id admin >/dev/null 2>&1 || useradd --create-home --shell /bin/bash --comment "BlurCam admin" admin
passwd --lock admin >/dev/null
# Each device makes its own SSH host keys on first boot (blurcam-provision).
rm -f /etc/ssh/ssh_host_*
# Each device gets its own machine id on first boot.
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id

say "done: $("$VENV/bin/blurcam" --version)"
