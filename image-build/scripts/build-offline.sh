#!/usr/bin/env bash
# The offline image: Debian trixie arm64 from Debian's archive alone, with the same appliance
# install steps as production (install-appliance.sh, configure-boot.sh, read-only-root.sh), in the
# SD card layout of LAYOUT.md. For tests on machines that cannot reach the Raspberry Pi archive;
# not meant to boot a real Pi (Debian has no Pi boot firmware in main), but it boots in QEMU's
# virt machine with Debian's arm64 kernel.
# usage: build-offline.sh FLEET_FILE OUT_DIR     -> OUT_DIR/blurcam-offline.img and the update
#                                                  bundle of the same release, blurcam-offline.raucb
source "$(dirname "$0")/common.sh"
require_root "the offline build"
fleet_file=$(realpath "${1:?usage: $0 FLEET_FILE OUT_DIR}")
out=$(realpath -m "${2:?usage: $0 FLEET_FILE OUT_DIR}")
command -v genimage >/dev/null || die "genimage missing: apt-get install genimage"
start=$(date +%s)

# Layers: the slow base (core packages, cached for a long time), then packages/extra.txt.
base=$(bash "$IMAGE_BUILD_DIR/scripts/base-rootfs.sh")
tarball=$(bash "$IMAGE_BUILD_DIR/scripts/extra-layer.sh" "$base")
mkdir -p "$CACHE_DIR"
work=$(mktemp -d "$CACHE_DIR/work.XXXXXX")
trap 'remove_scratch "$work" "$CACHE_DIR/work."' EXIT
payload=$work/payload
bash "$IMAGE_BUILD_DIR/scripts/make-payload.sh" "$fleet_file" "$payload"
# A/B updates (image-build/update/): RAUC's configuration, the fleet's keyring, the device side.
bash "$IMAGE_BUILD_DIR/update/stage-update.sh" "$fleet_file" "$payload" "$CACHE_DIR"

# The whole recipe (rootfs layers, payload, these scripts) keys the finished image: an unchanged
# recipe reuses it. Wheels are zips with timestamps, so the blurcam wheel is keyed by its files.
key=$( { echo "$tarball"
         (cd "$payload" && find . -type f ! -name 'blurcam-*.whl' -print0 | sort -z | xargs -0 sha256sum)
         unzip -p "$payload"/wheels/blurcam-*.whl | sha256sum
         cat "$IMAGE_BUILD_DIR/genimage.cfg.in" "$IMAGE_BUILD_DIR"/boot-partition/* "$0"
         cat "$IMAGE_BUILD_DIR"/update/uboot/* "$IMAGE_BUILD_DIR"/update/*.sh; } | sha256sum | cut -c1-16)
cached=$CACHE_DIR/image-$key
if [ -f "$cached/blurcam-offline.img" ]; then
  log "image: recipe unchanged, reusing $cached"
else
  find "$CACHE_DIR" -maxdepth 1 -name 'image-[0-9a-f]*' -type d -exec rm -rf --one-file-system -- {} +
  rootfs=$work/rootfs
  mkdir -p "$rootfs"
  log "rootfs: unpacking $(basename "$tarball")"
  tar -C "$rootfs" --numeric-owner -xpf "$tarball"

  # What the base system gives on a Pi (Raspberry Pi OS's stage1 writes these): the boot files
  # and an fstab. The tree's /boot/firmware becomes slot A's boot partition (p2, bootA), as on a
  # Pi with tryboot; the card's own FAT partition (p1, BLURCAM) is mounted there on the device.
  signature=0x$(echo "$key" | cut -c1-8)
  partuuid=${signature#0x}
  mkdir -p "$rootfs/boot/firmware"
  kver=$(basename "$rootfs"/boot/vmlinuz-* | sed 's/^vmlinuz-//')
  cp "$rootfs/boot/vmlinuz-$kver" "$rootfs/boot/firmware/vmlinuz"
  cp "$rootfs/boot/initrd.img-$kver" "$rootfs/boot/firmware/initrd.img"
  printf '[all]\narm_64bit=1\nkernel=vmlinuz\ninitramfs initrd.img followkernel\n' > "$rootfs/boot/firmware/config.txt"
  # ro: the root stays read-only from the kernel's first mount on (read-only-root.sh).
  echo "console=ttyAMA0,115200 console=tty1 root=PARTUUID=$partuuid-05 ro rootfstype=ext4 fsck.repair=yes rootwait" \
    > "$rootfs/boot/firmware/cmdline.txt"
  # p5 or p6 is / (whichever slot booted: the kernel's root=), read-only and never checked (never
  # written); p7 is checked (and repaired: fsck.repair=yes) before every mount. systemd gives a
  # device 90 s to show up before it gives its mount up: p1 and p7 get 5 min, as a slow card or an
  # emulated test VM on a busy machine found them only after ~3 min (udevd itself started at 165 s;
  # p1 given up meant no identity, no fleet keys, no SSH and no update confirm for that boot).
  cat > "$rootfs/etc/fstab" <<FSTAB
# The SD card (image-build/LAYOUT.md). Written by image-build/scripts/build-offline.sh.
/dev/root              /                 ext4   ro,noatime                                  0  0
PARTUUID=$partuuid-01  /boot/firmware    vfat   ro,noatime,fmask=0022,dmask=0022,nofail,x-systemd.device-timeout=5min  0  2
PARTUUID=$partuuid-07  /var/lib/blurcam  ext4   noatime,nodev,nosuid,noexec,errors=remount-ro,x-systemd.device-timeout=5min  0  2
# What else persists lives on p7 too (blurcam-data.service makes the directories).
/var/lib/blurcam/system/web   /var/lib/blurcam-web  none  bind,x-systemd.requires=blurcam-data.service  0  0
/var/lib/blurcam/system/rauc  /var/lib/rauc         none  bind,x-systemd.requires=blurcam-data.service  0  0
# The few places the running system writes: RAM.
tmpfs  /var/tmp                  tmpfs  mode=1777,nosuid,nodev,size=64M        0  0
tmpfs  /var/log                  tmpfs  mode=0755,nosuid,nodev,noexec,size=16M 0  0
tmpfs  /var/lib/NetworkManager   tmpfs  mode=0700,nosuid,nodev,noexec,size=4M  0  0
# systemd's own state (timesyncd's clock file, rfkill, the random seed): units that cannot start
# without a writable StateDirectory; nothing there needs to outlive a boot on this device.
tmpfs  /var/lib/systemd          tmpfs  mode=0755,nosuid,nodev,noexec,size=4M  0  0
FSTAB
  echo blurcam > "$rootfs/etc/hostname"

  log "rootfs: install-appliance.sh + configure-boot.sh + read-only-root.sh under qemu-user"
  cp -a "$payload" "$rootfs/tmp/blurcam-payload"
  in_rootfs "$rootfs" sh -c 'sh /tmp/blurcam-payload/install-appliance.sh /tmp/blurcam-payload &&
                             sh /tmp/blurcam-payload/configure-boot.sh /boot/firmware &&
                             sh /tmp/blurcam-payload/update/install-update.sh /tmp/blurcam-payload/update offline &&
                             sh /tmp/blurcam-payload/read-only-root.sh'
  sh "$IMAGE_BUILD_DIR/update/slot-boot-files.sh" "$rootfs/boot/firmware" A
  rm -rf "$rootfs/tmp/blurcam-payload" "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin

  # p1: what an operator sees when the card is in a PC. p7 (the tree's /var/lib/blurcam, made
  # by read-only-root.sh) is root's at its top (LAYOUT.md), as genimage.cfg.in says.
  mkdir -p "$work/blurcam"
  cp "$IMAGE_BUILD_DIR"/boot-partition/* "$work/blurcam/"
  # U-Boot's slot choice (image-build/update/): boot.scr and the slot state, A good, B empty.
  bash "$IMAGE_BUILD_DIR/update/make-boot-files.sh" qemu "$work/blurcam" >/dev/null

  log "image: genimage"
  root_mb=$(( $(du -sm --exclude="$rootfs/boot/firmware" "$rootfs" | cut -f1) * 13 / 10 + 200 ))
  # A whole number of the 4 MiB alignment, or genimage rounds slot A's partition up and not B's:
  # the slots must be the same size (an update writes one slot's filesystem into the other).
  root_mb=$(( (root_mb + 3) / 4 * 4 ))
  sed -e "s/@ROOT_SIZE@/${root_mb}M/" -e "s/@DISK_SIGNATURE@/$signature/" \
      -e "s#@BLURCAM_DIR@#$work/blurcam#" \
    "$IMAGE_BUILD_DIR/genimage.cfg.in" > "$work/genimage.cfg"
  mkdir -p "$work/image"
  genimage --config "$work/genimage.cfg" --rootpath "$rootfs" --tmppath "$work/genimage-tmp" \
    --inputpath "$work/image" --outputpath "$work/image" >&2
  mkdir -p "$cached.partial"
  mv "$work/image/blurcam.img" "$cached.partial/blurcam-offline.img"
  # The update bundle of this very release: slot A's two filesystems, signed with the fleet's key.
  read -r sign_key sign_cert _ < <(bash "$IMAGE_BUILD_DIR/update/signing-key.sh" "$fleet_file" "$CACHE_DIR" 2>/dev/null)
  version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$PROJECT_DIR/appliance/__init__.py")+$key
  log "bundle: blurcam-offline.raucb ($version)"
  bash "$IMAGE_BUILD_DIR/update/make-bundle.sh" --rootfs "$work/image/rootA.ext4" --boot "$work/image/bootA.vfat" \
    --compatible blurcam-qemu-arm64 --version "$version" --key "$sign_key" --cert "$sign_cert" \
    --out "$cached.partial/blurcam-offline.raucb"
  mv "$cached.partial" "$cached"
fi

mkdir -p "$out"
ln -f "$cached/blurcam-offline.img" "$out/blurcam-offline.img" 2>/dev/null || cp --sparse=always "$cached/blurcam-offline.img" "$out/"
ln -f "$cached/blurcam-offline.raucb" "$out/blurcam-offline.raucb" 2>/dev/null || cp "$cached/blurcam-offline.raucb" "$out/"
log "image: $out/blurcam-offline.img ($(du -h --apparent-size "$out/blurcam-offline.img" | cut -f1)) in $(( $(date +%s) - start )) s"
