# BlurCam A/B slot selection with boot counting, run by U-Boot's distro boot from the boot
# partition (p1) as boot.scr. Used where the firmware has no tryboot: the Pi Zero 2 W and the
# QEMU test VM. See image-build/update/README.md.
#
# State: BOOT_ORDER ("A B" or "B A") and BOOT_A_LEFT / BOOT_B_LEFT, kept in bootslot.env on p1,
# the same file Linux edits with fw_setenv (libubootenv, /etc/fw_env.config) and RAUC's uboot
# backend. It is not U-Boot's own uboot.env: U-Boot imports that one whole at start-up and would
# lose its default boot commands to a three-variable file.
#
# A slot is good when its counter is BLURCAM_GOOD_ATTEMPTS (RAUC's boot-attempts). A freshly
# installed slot is on trial with 1 attempt (boot-attempts-primary): this script takes the
# attempt and writes the file before booting it, so if that boot never reaches the health
# check's mark-good (crash, hang, watchdog, power cut) the next boot starts the other slot.
# Booting a good slot writes nothing: steady-state boots leave the card alone.
# The platform part (prepended by the build) sets blurcam_dev, addresses and blurcam_console.

setenv BLURCAM_GOOD_ATTEMPTS 3
setenv BOOT_ORDER
setenv BOOT_A_LEFT
setenv BOOT_B_LEFT
if load ${blurcam_dev}:1 ${blurcam_env_addr} bootslot.env; then
  env import -c ${blurcam_env_addr} ${filesize} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT || echo "BlurCam: bootslot.env unreadable, using defaults"
fi
test -n "${BOOT_ORDER}" || setenv BOOT_ORDER "A B"
test -n "${BOOT_A_LEFT}" || setenv BOOT_A_LEFT ${BLURCAM_GOOD_ATTEMPTS}
test -n "${BOOT_B_LEFT}" || setenv BOOT_B_LEFT 0

setenv slot
setenv save_env
for s in ${BOOT_ORDER}; do
  if test -z "${slot}"; then
    if test "${s}" = "A" && test ${BOOT_A_LEFT} -gt 0; then
      setenv slot A; setenv boot_part 2; setenv root_part 5
      if test ${BOOT_A_LEFT} -lt ${BLURCAM_GOOD_ATTEMPTS}; then
        setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1; setenv save_env 1
      fi
    elif test "${s}" = "B" && test ${BOOT_B_LEFT} -gt 0; then
      setenv slot B; setenv boot_part 3; setenv root_part 6
      if test ${BOOT_B_LEFT} -lt ${BLURCAM_GOOD_ATTEMPTS}; then
        setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1; setenv save_env 1
      fi
    fi
  fi
done

if test -z "${slot}"; then
  # Both slots used up (both failed a trial): give each one more trial rather than stop here;
  # the first to pass its health check is marked good again.
  echo "BlurCam: no bootable slot left; one more trial for each"
  setenv BOOT_ORDER "A B"
  setenv BOOT_A_LEFT 1
  setenv BOOT_B_LEFT 1
  setenv save_env 1
fi

if test -n "${save_env}"; then
  env export -c -s 0x4000 ${blurcam_env_addr} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT
  fatwrite ${blurcam_dev}:1 ${blurcam_env_addr} bootslot.env 0x4000
fi
if test -z "${slot}"; then
  reset
fi
echo "BlurCam: booting slot ${slot} (order ${BOOT_ORDER}, A left ${BOOT_A_LEFT}, B left ${BOOT_B_LEFT})"

# The slot's boot partition holds the kernel, the initramfs and cmdline.env
# (blurcam_cmdline=<kernel arguments without root=>); the root partition is found by its PARTUUID.
setenv blurcam_cmdline
if load ${blurcam_dev}:${boot_part} ${blurcam_env_addr} cmdline.env; then
  env import -t ${blurcam_env_addr} ${filesize} blurcam_cmdline
fi
part uuid ${blurcam_dev}:${root_part} root_uuid
setenv bootargs "${blurcam_console} ${blurcam_cmdline} root=PARTUUID=${root_uuid} rootwait rauc.slot=${slot}"
echo "BlurCam: bootargs ${bootargs}"
if load ${blurcam_dev}:${boot_part} ${kernel_addr_r} vmlinuz && load ${blurcam_dev}:${boot_part} ${ramdisk_addr_r} initrd.img; then
  booti ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${blurcam_fdt}
fi
# Still here: the slot's kernel is missing or does not start. Count it as a failed attempt
# and let the next boot take the other slot.
echo "BlurCam: slot ${slot} does not boot; marking it failed and resetting"
if test "${slot}" = "A"; then setenv BOOT_A_LEFT 0; else setenv BOOT_B_LEFT 0; fi
env export -c -s 0x4000 ${blurcam_env_addr} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT
fatwrite ${blurcam_dev}:1 ${blurcam_env_addr} bootslot.env 0x4000
reset
