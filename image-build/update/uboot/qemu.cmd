# Platform part for QEMU's arm64 virt machine (Debian's u-boot-qemu, qemu_arm64): the disk is
# virtio 0, QEMU hands U-Boot the device tree at fdt_addr, and Debian's vmlinuz is gzip
# compressed, so booti needs room to unpack it (kernel_comp_*), clear of the initramfs.
setenv blurcam_dev "virtio 0"
setenv blurcam_env_addr ${pxefile_addr_r}
setenv blurcam_fdt ${fdt_addr}
setenv blurcam_console "console=ttyAMA0,115200"
setenv ramdisk_addr_r 0x48000000
setenv kernel_comp_addr_r 0x50000000
setenv kernel_comp_size 0x6000000
