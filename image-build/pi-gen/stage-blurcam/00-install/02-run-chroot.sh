#!/bin/sh -e
# pi-gen, inside Raspberry Pi OS's root: the same appliance steps the offline build runs.
sh /tmp/blurcam-payload/install-appliance.sh /tmp/blurcam-payload
sh /tmp/blurcam-payload/configure-boot.sh /boot/firmware
sh /tmp/blurcam-payload/read-only-root.sh
rm -rf /tmp/blurcam-payload
