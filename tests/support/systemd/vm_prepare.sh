#!/bin/sh
# Runs in the VM's overlay root (chroot) before systemd starts: lays the appliance out the way
# the SD image does, then trims the build machine's own services and adds the test driver.
set -eu
REPO=$1
RUN=$2

UDEV_DEB=$3

# None of the build machine's services: only what an appliance boots. udev is not installed
# on every build machine (containers), so the VM gets it from the package.
rm -f /etc/systemd/system/multi-user.target.wants/* /etc/systemd/system/getty.target.wants/* \
      /etc/systemd/system/timers.target.wants/* /etc/systemd/system/sysinit.target.wants/*
systemctl --quiet mask serial-getty@ttyS0.service console-getty.service getty@tty1.service \
      systemd-tmpfiles-clean.timer
[ -x /lib/systemd/systemd-udevd ] ||
  dpkg-deb --fsys-tarfile "$UDEV_DEB" | tar -x --keep-directory-symlink -C /

# The image layout: the app in a venv at /opt/blurcam/venv on the system's python3 (the
# checkout's own .venv may sit on a python under /root, which the service users cannot reach),
# with this checkout's packages on its path; the units installed and enabled by install.sh.
mkdir -p /opt/blurcam
python3 -m venv --without-pip /opt/blurcam/venv
site=$(/opt/blurcam/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
packages=$("$REPO/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "import site; site.addsitedir('$packages')" > "$site/blurcam-checkout.pth"
printf '#!/opt/blurcam/venv/bin/python\nimport sys\nfrom appliance.cli import main\nsys.exit(main())\n' \
  > /opt/blurcam/venv/bin/blurcam
chmod 755 /opt/blurcam/venv/bin/blurcam
"$REPO/systemd/install.sh" /
# A checkout under /tmp (a fresh clone) would be hidden by the services' PrivateTmp=: show it
# to them read-only, the way the image shows them /opt/blurcam.
case "$REPO" in /tmp/*)
  for unit in blurcam blurcam-web blurcam-gadget; do
    mkdir -p "/etc/systemd/system/$unit.service.d"
    printf '[Service]\nBindReadOnlyPaths=%s\n' "$REPO" > "/etc/systemd/system/$unit.service.d/vm-checkout.conf"
  done ;;
esac

# A V4L2 camera for the sandboxed pipeline (the Pi camera's stand-in). The UDC (usbip-vudc) is
# deliberately not loaded: the test loads it late, as a slow dwc2 probe would.
echo vivid > /etc/modules-load.d/blurcam-vm-test.conf
# TCG emulates the CPU ~10x slower than a Pi runs it: importing numpy, OpenCV and the model
# runtime takes about a minute, so the VM (only) allows a longer start.
mkdir -p /etc/systemd/system/blurcam.service.d
printf '[Service]\nTimeoutStartSec=300\n' > /etc/systemd/system/blurcam.service.d/vm-test.conf
mkdir -p /etc/systemd/system/blurcam-web.service.d
printf '[Service]\nEnvironment=BLURCAM_ADMIN_PASSWORD=vm-test-password\n' \
  > /etc/systemd/system/blurcam-web.service.d/vm-test.conf

cat > /etc/systemd/system/blurcam-vm-check.service <<UNIT
[Unit]
Description=BlurCam VM test driver
After=blurcam-web.service blurcam.service blurcam-gadget.service
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=oneshot
ExecStart=$REPO/.venv/bin/python $REPO/tests/support/systemd/vm_check.py $RUN
StandardOutput=journal+console
TimeoutStartSec=900

[Install]
WantedBy=multi-user.target
UNIT
systemctl --quiet enable blurcam-vm-check.service
echo "prepared: $(ls /etc/systemd/system/multi-user.target.wants)"
