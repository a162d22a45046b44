#!/bin/busybox sh
# /init for booting the host's own root file system with systemd as PID 1 (tests/systemd).
# Appended to tests/support/vm's initramfs, whose modules it uses. The host's / (9p) is the lower layer
# of an overlay with a tmpfs on top, so the VM may install, enable and write anything while the
# host stays untouched; only the run directory is the host's own (results come back there).
# Kernel command line: blurcam_run=DIR blurcam_repo=DIR blurcam_modules=DIR blurcam_udev=DEB
# (host paths).
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    blurcam_run=*) RUN="${arg#blurcam_run=}" ;;
    blurcam_repo=*) REPO="${arg#blurcam_repo=}" ;;
    blurcam_modules=*) MODULES="${arg#blurcam_modules=}" ;;
    blurcam_udev=*) UDEV_DEB="${arg#blurcam_udev=}" ;;
  esac
done
fail() { echo "VMINIT: $*"; poweroff -f; }
for m in virtio_pci 9pnet_virtio 9p; do modprobe "$m" || fail "modprobe $m failed"; done
insmod /overlay.ko || fail "cannot load overlay.ko"

mkdir -p /lower /upper /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 hostroot /lower || fail "no host root"
mount -t tmpfs -o mode=0755 upper /upper
mkdir -p /upper/data /upper/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work /newroot \
  || fail "cannot mount the overlay root"
# Its own /tmp: systemd-tmpfiles would otherwise walk the host's /tmp over 9p at boot. A checkout
# under /tmp (a fresh clone) stays visible: its overlay view is kept and put back on the new /tmp.
case "$REPO" in /tmp/*) mkdir -p /keep-tmp; mount --bind /newroot/tmp /keep-tmp ;; esac
mount -t tmpfs -o mode=1777 tmp /newroot/tmp
case "$REPO" in
  /tmp/*) mkdir -p "/newroot$REPO"
          mount --bind "/keep-tmp${REPO#/tmp}" "/newroot$REPO" || fail "cannot keep the checkout $REPO" ;;
esac
mkdir -p "/newroot$RUN"
mount --bind "/lower$RUN" "/newroot$RUN" || fail "no run dir $RUN"
# The VM kernel's modules, for modprobe and udev inside the booted system.
VERSION=$(uname -r)
mkdir -p "/newroot/usr/lib/modules/$VERSION"
mount --bind "/lower$MODULES" "/newroot/usr/lib/modules/$VERSION" || fail "no modules $MODULES"

mount --bind /proc /newroot/proc
mount --bind /sys /newroot/sys
mount --bind /dev /newroot/dev
chroot /newroot /bin/sh "$REPO/tests/support/systemd/vm_prepare.sh" "$REPO" "$RUN" "$UDEV_DEB" > "/newroot$RUN/prepare.log" 2>&1 \
  || fail "vm_prepare.sh failed (see $RUN/prepare.log)"
umount /newroot/dev /newroot/sys /newroot/proc
echo "VMINIT: switching to systemd"
exec switch_root /newroot /lib/systemd/systemd
