#!/bin/bash -e
# pi-gen, on the build host: hand the payload (made by image-build/scripts/make-payload.sh, placed
# next to this file by build-production.sh) to the chroot step.
rm -rf "${ROOTFS_DIR}/tmp/blurcam-payload"
cp -a payload "${ROOTFS_DIR}/tmp/blurcam-payload"
