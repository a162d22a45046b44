"""A tiny arm64 "kernel" for testing the boot loader alone: a valid arm64 Image header (so U-Boot's
booti accepts it) and a few instructions that print a message on QEMU virt's PL011 UART and power the
machine off through PSCI. The real Debian kernel boots in the image VM tests; this one lets the boot
script's slot choice be checked in seconds, with the boot script and U-Boot themselves for real.
"""

from __future__ import annotations

import struct

UART = 0x0900_0000  # QEMU virt's PL011 data register
PSCI_SYSTEM_OFF = 0x8400_0008
HEADER = 64  # bytes before the code (arm64 Image header)


def _b(offset: int) -> int:
    return 0x1400_0000 | ((offset // 4) & 0x3FF_FFFF)


def _adr(rd: int, offset: int) -> int:
    return 0x1000_0000 | ((offset & 3) << 29) | (((offset >> 2) & 0x7FFFF) << 5) | rd


def _movz(rd: int, imm16: int, shift: int) -> int:
    return 0xD280_0000 | ((shift // 16) << 21) | (imm16 << 5) | rd


def _movk(rd: int, imm16: int, shift: int) -> int:
    return 0xF280_0000 | ((shift // 16) << 21) | (imm16 << 5) | rd


def _ldrb_post1(rt: int, rn: int) -> int:  # ldrb wt, [xn], #1
    return 0x3840_1400 | (rn << 5) | rt


def _cbz(rt: int, offset: int) -> int:
    return 0x3400_0000 | (((offset // 4) & 0x7FFFF) << 5) | rt


def _strb(rt: int, rn: int) -> int:  # strb wt, [xn]
    return 0x3900_0000 | (rn << 5) | rt


HVC0 = 0xD400_0002


def stub_kernel(message: str) -> bytes:
    """An arm64 Image that prints `message` + newline on the UART, then powers off."""
    code = [
        _adr(1, 0),  # patched below: x1 = message
        _movz(2, UART >> 16, 16),  # x2 = UART
        _ldrb_post1(3, 1),  # loop: w3 = *x1++
        _cbz(3, 12),  # if w3 == 0 goto off
        _strb(3, 2),  # *UART = w3
        _b(-12),  # goto loop
        _movz(0, PSCI_SYSTEM_OFF >> 16, 16),  # off: x0 = SYSTEM_OFF
        _movk(0, PSCI_SYSTEM_OFF & 0xFFFF, 0),
        HVC0,
        _b(0),  # should never get here
    ]
    code[0] = _adr(1, 4 * len(code))  # the message follows the code
    body = b"".join(struct.pack("<I", c) for c in code) + message.encode() + b"\n\0"
    size = HEADER + len(body)
    size += -size % 8
    header = struct.pack("<II", _b(HEADER), 0)  # code0: branch over the header; code1
    # flags 0xa: little endian, 4K pages, may sit anywhere in RAM (like Linux; else booti moves it
    # to the start of RAM, over the device tree QEMU put there)
    header += struct.pack("<QQQQQQ", 0, size, 0xA, 0, 0, 0)  # text_offset, image_size, flags, res2-4
    header += b"ARM\x64" + struct.pack("<I", 0)  # magic, res5
    return (header + body).ljust(size, b"\0")
