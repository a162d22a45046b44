"""A host that speaks to the webcam's interfaces directly through usbfs, timing every answer.

uvcvideo hides its control requests and waits up to 5 s for each; a host on another OS may give up
after 500 ms (USB 2.0 section 9.2.6.4). This client sends the requests itself with that timeout,
so the test sees exactly how long the device took and what it answered. The interfaces must not
be bound to uvcvideo while it talks (see `unbind_driver`).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

USB_DEVICES = Path("/sys/bus/usb/devices")
UVCVIDEO = Path("/sys/bus/usb/drivers/uvcvideo")

SET_CUR, GET_CUR = 0x01, 0x81
OUT_CLASS_INTERFACE, IN_CLASS_INTERFACE = 0x21, 0xA1
VS_PROBE, VS_COMMIT = 0x01, 0x02
VC_REQUEST_ERROR_CODE = 0x02


class usbdevfs_ctrltransfer(ctypes.Structure):
    _fields_ = [("bRequestType", ctypes.c_uint8), ("bRequest", ctypes.c_uint8),
                ("wValue", ctypes.c_uint16), ("wIndex", ctypes.c_uint16),
                ("wLength", ctypes.c_uint16), ("timeout", ctypes.c_uint32),
                ("data", ctypes.c_void_p)]


class usbdevfs_setinterface(ctypes.Structure):
    _fields_ = [("interface", ctypes.c_uint), ("altsetting", ctypes.c_uint)]


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord("U") << 8) | nr


USBDEVFS_CONTROL = _ioc(3, 0, ctypes.sizeof(usbdevfs_ctrltransfer))
USBDEVFS_SETINTERFACE = _ioc(2, 4, ctypes.sizeof(usbdevfs_setinterface))
USBDEVFS_CLAIMINTERFACE = _ioc(2, 15, ctypes.sizeof(ctypes.c_uint))
USBDEVFS_RELEASEINTERFACE = _ioc(2, 16, ctypes.sizeof(ctypes.c_uint))


@dataclass
class Answer:
    what: str
    seconds: float
    data: bytes | None  # None: stalled or timed out
    error: str | None = None
    at: float = 0.0  # time.monotonic() when it was sent (the guest's clock, as the daemon's)


@dataclass
class UsbfsHost:
    """`with UsbfsHost("1-1", interfaces=(0, 1)) as host: host.get_cur(...)`"""

    device: str  # sysfs name, e.g. "1-1"
    interfaces: tuple[int, ...]
    timeout_ms: int = 500
    answers: list[Answer] = field(default_factory=list)
    fd: int = -1

    def __enter__(self) -> UsbfsHost:
        base = USB_DEVICES / self.device
        bus, dev = (int((base / name).read_text()) for name in ("busnum", "devnum"))
        self.fd = os.open(f"/dev/bus/usb/{bus:03d}/{dev:03d}", os.O_RDWR)
        for number in self.interfaces:
            fcntl.ioctl(self.fd, USBDEVFS_CLAIMINTERFACE, ctypes.c_uint(number))
        return self

    def __exit__(self, *exc) -> None:
        for number in self.interfaces:
            try:
                fcntl.ioctl(self.fd, USBDEVFS_RELEASEINTERFACE, ctypes.c_uint(number))
            except OSError:
                pass
        os.close(self.fd)

    def control(self, what: str, request_type: int, request: int, value: int, index: int,
                data: bytes | int) -> Answer:
        """One control transfer: bytes to send (OUT) or a length to read (IN), timed."""
        length = data if isinstance(data, int) else len(data)
        buf = ctypes.create_string_buffer(bytes(data) if isinstance(data, bytes) else length, length)
        xfer = usbdevfs_ctrltransfer(request_type, request, value, index, length, self.timeout_ms,
                                     ctypes.addressof(buf))
        began = time.monotonic()
        try:
            got = fcntl.ioctl(self.fd, USBDEVFS_CONTROL, xfer)
            answer = Answer(what, time.monotonic() - began, buf.raw[:got] if request_type & 0x80 else b"",
                            at=began)
        except OSError as exc:
            name = errno.errorcode.get(exc.errno, str(exc.errno))
            answer = Answer(what, time.monotonic() - began, None, name, at=began)
        self.answers.append(answer)
        return answer

    def set_interface(self, interface: int, alt: int) -> Answer:
        began = time.monotonic()
        try:
            fcntl.ioctl(self.fd, USBDEVFS_SETINTERFACE, usbdevfs_setinterface(interface, alt))
            answer = Answer(f"SET_INTERFACE({interface},{alt})", time.monotonic() - began, b"", at=began)
        except OSError as exc:
            answer = Answer(f"SET_INTERFACE({interface},{alt})", time.monotonic() - began, None,
                            errno.errorcode.get(exc.errno, str(exc.errno)), at=began)
        self.answers.append(answer)
        return answer


def probe_bytes(format_index: int, frame_index: int, interval: int, length: int = 34) -> bytes:
    raw = bytearray(length)
    struct.pack_into("<HBBI", raw, 0, 1, format_index, frame_index, interval)
    return bytes(raw)


def unbind_driver(device: str, interfaces: tuple[int, ...]) -> None:
    """Take the interfaces away from uvcvideo (the host driver), so usbfs may claim them."""
    for number in interfaces:
        name = f"{device}:1.{number}"
        if (UVCVIDEO / name).exists():
            (UVCVIDEO / "unbind").write_text(name)


def bind_driver(device: str, interfaces: tuple[int, ...]) -> None:
    for number in interfaces:
        name = f"{device}:1.{number}"
        if not (UVCVIDEO / name).exists():
            (UVCVIDEO / "bind").write_text(name)
