#!/bin/sh
# Installs BlurCam's units, udev rule, system users and module list into a root file system
# (the SD image tree while building it, or / on a device) and enables the three services.
# The app itself lives in /opt/blurcam/venv (bin/blurcam), installed by the image build.
# usage: systemd/install.sh ROOT
set -eu
root=${1:?usage: $0 ROOT}
here=$(cd "$(dirname "$0")" && pwd)

install -D -m 0644 -t "$root/usr/lib/systemd/system" \
    "$here/blurcam-gadget.service" "$here/blurcam.service" "$here/blurcam-web.service"
install -D -m 0644 -t "$root/usr/lib/udev/rules.d" "$here/90-blurcam-gadget.rules"
install -D -m 0644 -t "$root/usr/lib/sysusers.d" "$here/sysusers.d/blurcam.conf"
install -D -m 0644 -t "$root/usr/lib/modules-load.d" "$here/modules-load.d/blurcam.conf"

# Create the users now so the image's /etc/passwd is complete before first boot
# (a read-only root cannot gain them later).
systemd-sysusers --root="$root" "$here/sysusers.d/blurcam.conf"
systemctl --root="$root" --quiet enable blurcam-gadget.service blurcam.service blurcam-web.service
