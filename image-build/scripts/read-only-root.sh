#!/bin/sh
# Makes the image's root work read-only (LAYOUT.md): what the running system writes goes to RAM
# (/run, /tmp, and the tmpfs mounts of the fstab) or to the data partition (p7); nothing else
# writes to the card. SHARED by both builds (after install-appliance.sh), inside the image's root.
# usage: read-only-root.sh
set -eu
say() { echo "read-only-root: $*"; }

say "the data partition's tree (/var/lib/blurcam, p7) and the mount points into it"
systemd-tmpfiles --create /usr/lib/tmpfiles.d/blurcam-data.conf
install -d -m 0700 /var/lib/blurcam-web
install -d -m 0755 /var/lib/rauc
systemctl enable blurcam-data.service

say "files written at run time live in /run (provisioning writes them each boot)"
# NetworkManager writes the resolver configuration here and leaves such a link alone.
ln -sfn ../run/NetworkManager/resolv.conf /etc/resolv.conf
ln -sfn /run/blurcam-fleet/fleet.toml /etc/blurcam/fleet.toml

say "no timers that write to the card (package lists, dpkg backups, scrubs, TRIM)"
systemctl mask apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer \
  e2scrub_all.timer e2scrub_reap.service fstrim.timer

# What systemd-tmpfiles would otherwise try to create on the read-only root at every boot.
systemd-tmpfiles --create --exclude-prefix=/dev --exclude-prefix=/proc --exclude-prefix=/sys \
  --exclude-prefix=/run --exclude-prefix=/tmp --exclude-prefix=/var/tmp --exclude-prefix=/var/log \
  --exclude-prefix=/var/lib/NetworkManager --exclude-prefix=/boot 2>&1 | sed 's/^/read-only-root: tmpfiles: /' || true
say "done"
