#!/bin/busybox sh
# /init of the test VM: load modules, mount the host's root over 9p at /host, run the test
# script there (chroot), power off. Kernel command line: blurcam_script=PATH blurcam_run=DIR
# blurcam_load=MOD,MOD,... (the modules to load, in order; out-of-tree ones are in /lib/modules/extra).
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
LOAD="virtio_pci 9pnet_virtio 9p configfs libcomposite usb_f_uvc usb_f_ncm uvcvideo usbip-vudc vhci-hcd"
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    blurcam_script=*) SCRIPT="${arg#blurcam_script=}" ;;
    blurcam_run=*) RUN="${arg#blurcam_run=}" ;;
    blurcam_load=*) LOAD=$(echo "${arg#blurcam_load=}" | tr , ' ') ;;
  esac
done
for m in $LOAD; do
  grep -q "/${m}.ko" /lib/modules/*/modules.builtin 2>/dev/null && continue  # built in
  if [ -e "/lib/modules/extra/$m.ko" ]; then
    insmod "/lib/modules/extra/$m.ko" || echo "VMINIT: insmod $m failed"
  else
    modprobe "$m" || echo "VMINIT: modprobe $m failed"
  fi
done
mount -t configfs none /sys/kernel/config
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=loose hostroot /host \
  || { echo "VMINIT: cannot mount the host root"; poweroff -f; }
mount --bind /proc /host/proc
mount --bind /sys /host/sys
mount --bind /dev /host/dev
mount -t configfs none /host/sys/kernel/config 2>/dev/null
# The VM's own /run (sockets, pid files): never the host's. /tmp stays the host's, because the
# checkout under test may live there.
mount -t tmpfs none /host/run
mount -t devpts none /host/dev/pts 2>/dev/null
echo "VMINIT: running $SCRIPT"
chroot /host /bin/sh "$SCRIPT" "$RUN" > "/host$RUN/guest.log" 2>&1
echo "VMINIT: script exit $?"
umount /host/run 2>/dev/null
sync
poweroff -f
