#!/usr/bin/env bash
# The offline image: Debian trixie arm64 from Debian's archive alone, with the same appliance
# install steps as production (install-appliance.sh, configure-boot.sh). For tests on machines
# that cannot reach the Raspberry Pi archive; not meant to boot a real Pi (Debian has no Pi
# boot firmware in main), but it boots in QEMU's virt machine with Debian's arm64 kernel.
# usage: build-offline.sh FLEET_FILE OUT_DIR     -> OUT_DIR/blurcam-offline.img
source "$(dirname "$0")/common.sh"
require_root "the offline build"
fleet_file=$(realpath "${1:?usage: $0 FLEET_FILE OUT_DIR}")
out=$(realpath -m "${2:?usage: $0 FLEET_FILE OUT_DIR}")
command -v genimage >/dev/null || die "genimage missing: apt-get install genimage"
start=$(date +%s)

tarball=$(bash "$IMAGE_BUILD_DIR/scripts/base-rootfs.sh")
work=$CACHE_DIR/work
payload=$work/payload
bash "$IMAGE_BUILD_DIR/scripts/make-payload.sh" "$fleet_file" "$payload"

# The whole recipe (base rootfs, payload, these scripts) keys the finished image: an unchanged
# recipe reuses it. Wheels are zips with timestamps, so the blurcam wheel is keyed by its files.
key=$( { echo "$tarball"
         (cd "$payload" && find . -type f ! -name 'blurcam-*.whl' -print0 | sort -z | xargs -0 sha256sum)
         unzip -p "$payload"/wheels/blurcam-*.whl | sha256sum
         cat "$IMAGE_BUILD_DIR/genimage.cfg.in" "$0"; } | sha256sum | cut -c1-16)
cached=$CACHE_DIR/image-$key
if [ -f "$cached/blurcam-offline.img" ]; then
  log "image: recipe unchanged, reusing $cached"
else
  rm -rf "$CACHE_DIR"/image-* "$work/rootfs" "$work/genimage-tmp"
  rootfs=$work/rootfs
  mkdir -p "$rootfs"
  log "rootfs: unpacking $(basename "$tarball")"
  tar -C "$rootfs" --numeric-owner -xpf "$tarball"

  # What the base system gives on a Pi (Raspberry Pi OS's stage1 writes these): a boot partition
  # with config.txt and cmdline.txt, and an fstab. Here the kernel sits on it for QEMU.
  signature=0x$(echo "$key" | cut -c1-8)
  partuuid=${signature#0x}
  mkdir -p "$rootfs/boot/firmware"
  kver=$(basename "$rootfs"/boot/vmlinuz-* | sed 's/^vmlinuz-//')
  cp "$rootfs/boot/vmlinuz-$kver" "$rootfs/boot/firmware/vmlinuz"
  cp "$rootfs/boot/initrd.img-$kver" "$rootfs/boot/firmware/initrd.img"
  printf '[all]\narm_64bit=1\nkernel=vmlinuz\ninitramfs initrd.img followkernel\n' > "$rootfs/boot/firmware/config.txt"
  echo "console=ttyAMA0,115200 console=tty1 root=PARTUUID=$partuuid-02 rootfstype=ext4 fsck.repair=yes rootwait" \
    > "$rootfs/boot/firmware/cmdline.txt"
  cat > "$rootfs/etc/fstab" <<FSTAB
PARTUUID=$partuuid-01  /boot/firmware  vfat  defaults,noatime  0  2
PARTUUID=$partuuid-02  /               ext4  defaults,noatime  0  1
FSTAB
  echo blurcam > "$rootfs/etc/hostname"

  log "rootfs: install-appliance.sh + configure-boot.sh under qemu-user"
  cp -a "$payload" "$rootfs/tmp/blurcam-payload"
  in_rootfs "$rootfs" sh -c 'sh /tmp/blurcam-payload/install-appliance.sh /tmp/blurcam-payload &&
                             sh /tmp/blurcam-payload/configure-boot.sh /boot/firmware'
  rm -rf "$rootfs/tmp/blurcam-payload" "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin

  log "image: genimage"
  root_mb=$(( $(du -sm --exclude=./boot/firmware "$rootfs" | cut -f1) * 13 / 10 + 200 ))
  sed -e "s/@ROOT_SIZE@/${root_mb}M/" -e "s/@DISK_SIGNATURE@/$signature/" \
    "$IMAGE_BUILD_DIR/genimage.cfg.in" > "$work/genimage.cfg"
  mkdir -p "$cached.partial"
  genimage --config "$work/genimage.cfg" --rootpath "$rootfs" --tmppath "$work/genimage-tmp" \
    --inputpath "$cached.partial" --outputpath "$cached.partial" >&2
  mv "$cached.partial/blurcam.img" "$cached.partial/blurcam-offline.img"
  rm -f "$cached.partial"/*.vfat "$cached.partial"/*.ext4
  rm -rf "$work/genimage-tmp" "$rootfs"
  mv "$cached.partial" "$cached"
fi

mkdir -p "$out"
ln -f "$cached/blurcam-offline.img" "$out/blurcam-offline.img" 2>/dev/null || cp "$cached/blurcam-offline.img" "$out/"
log "image: $out/blurcam-offline.img ($(du -h --apparent-size "$out/blurcam-offline.img" | cut -f1)) in $(( $(date +%s) - start )) s"
