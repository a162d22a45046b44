# Platform part for the Raspberry Pi Zero 2 W (rpi_arm64 U-Boot loaded by the firmware as
# kernel=u-boot.bin from p1's config.txt): SD card mmc 0, the firmware's device tree at fdt_addr.
# Raspberry Pi OS's kernel8.img is uncompressed; vmlinuz is its name in the slot's boot partition.
setenv blurcam_dev "mmc 0"
setenv blurcam_env_addr ${pxefile_addr_r}
setenv blurcam_fdt ${fdt_addr}
setenv blurcam_console "console=serial0,115200"
