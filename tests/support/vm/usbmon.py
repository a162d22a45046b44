"""What the host's USB stack received, read through usbmon's binary interface (/dev/usbmonN).

Every completed isochronous IN URB of one device is taken apart into its packets; each non-empty
packet of a UVC stream starts with a payload header (bHeaderLength, bmHeaderInfo: FID, EOF, PTS,
SCR, ..., EOH), which is what is recorded. See Documentation/usb/usbmon.rst in the kernel.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import select
import struct
import threading
from dataclasses import dataclass, field

MON_IOC_MAGIC = 0x92
HEADER = struct.Struct("<QBBBBHccqiiII8siiII")  # struct mon_bin_hdr, 64 bytes
ISODESC = struct.Struct("<iIII")  # struct mon_bin_isodesc, 16 bytes
XFER_ISO = 0
RING_BYTES = 64 << 20  # the most usbmon allows; one captured URB may take a fifth of it


class _mon_bin_get(ctypes.Structure):
    _fields_ = [("hdr", ctypes.c_void_p), ("data", ctypes.c_void_p), ("alloc", ctypes.c_size_t)]


MON_IOCT_RING_SIZE = (MON_IOC_MAGIC << 8) | 4
MON_IOCG_STATS = (2 << 30) | (8 << 16) | (MON_IOC_MAGIC << 8) | 3  # struct mon_bin_stats
MON_IOCX_GETX = (1 << 30) | (ctypes.sizeof(_mon_bin_get) << 16) | (MON_IOC_MAGIC << 8) | 10

# bmHeaderInfo bits (UVC 1.5 section 2.4.3.3)
FID, EOF, PTS, SCR, RES, STI, ERR, EOH = (1 << i for i in range(8))


@dataclass
class Payload:
    """One non-empty isochronous packet: its length and its UVC payload header."""

    length: int
    header_length: int
    info: int
    pts: int | None
    scr_stc: int | None
    scr_sof: int | None


@dataclass
class Recording:
    payloads: list[Payload] = field(default_factory=list)
    empty_packets: int = 0
    urbs: int = 0
    packet_errors: int = 0  # packets with an error status in URBs that completed
    cancelled_urbs: int = 0  # URBs the host itself unlinked (uvcvideo does at STREAMOFF)
    lost_events: int = 0


def parse_payload(packet: bytes, length: int) -> Payload:
    """The header at the start of a `length`-byte packet (at least its first 12 bytes)."""
    hlen, info = packet[0], packet[1]
    pos, pts, stc, sof = 2, None, None, None
    if info & PTS and hlen >= pos + 4:
        pts = int.from_bytes(packet[pos:pos + 4], "little")
        pos += 4
    if info & SCR and hlen >= pos + 6:
        stc = int.from_bytes(packet[pos:pos + 4], "little")
        sof = int.from_bytes(packet[pos + 4:pos + 6], "little") & 0x7FF
    return Payload(length, hlen, info, pts, stc, sof)


class UsbmonRecorder:
    """Records the isochronous IN packets of device `devnum` on `bus` while running."""

    def __init__(self, bus: int, devnum: int, limit: int = 200_000):
        self.bus, self.devnum, self.limit = bus, devnum, limit
        self.recording = Recording()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd = -1

    def __enter__(self) -> UsbmonRecorder:
        self._fd = os.open(f"/dev/usbmon{self.bus}", os.O_RDONLY | os.O_NONBLOCK)
        fcntl.ioctl(self._fd, MON_IOCT_RING_SIZE, RING_BYTES)
        self._thread = threading.Thread(target=self._run, name="usbmon", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        stats = ctypes.create_string_buffer(8)
        fcntl.ioctl(self._fd, MON_IOCG_STATS, stats)
        self.recording.lost_events = struct.unpack("<II", stats.raw)[1]
        os.close(self._fd)

    def _run(self) -> None:
        header = ctypes.create_string_buffer(HEADER.size)
        data = ctypes.create_string_buffer(RING_BYTES // 5 + 65536)
        get = _mon_bin_get(ctypes.addressof(header), ctypes.addressof(data), len(data))
        view = memoryview(data)
        while True:  # after the stop, what is still in the ring
            if not select.select([self._fd], [], [], 0.2)[0]:
                if self._stop.is_set():
                    return
                continue
            try:
                fcntl.ioctl(self._fd, MON_IOCX_GETX, get)
            except BlockingIOError:
                continue
            self._take(header.raw, view)

    def _take(self, raw_header: bytes, data: memoryview) -> None:
        (_, kind, xfer, epnum, devnum, _, _, _, _, _, urb_status, _, _, _, _, _, _,
         ndesc) = HEADER.unpack(raw_header)
        if kind != b"C"[0] or xfer != XFER_ISO or not epnum & 0x80 or devnum != self.devnum:
            return
        rec = self.recording
        rec.urbs += 1
        if urb_status in (-errno.ENOENT, -errno.ECONNRESET):
            # Unlinked by the host: its packets not yet carried keep the -EXDEV that
            # usb_submit_urb() set, which says nothing about the device or the wire.
            rec.cancelled_urbs += 1
            return
        start = ndesc * ISODESC.size  # the data follows the packet descriptors
        for i in range(ndesc):
            iso_status, offset, length, _ = ISODESC.unpack_from(data, i * ISODESC.size)
            if iso_status != 0:
                rec.packet_errors += 1
            elif length == 0:
                rec.empty_packets += 1
            elif len(rec.payloads) < self.limit:
                header = bytes(data[start + offset:start + offset + min(length, 12)])
                rec.payloads.append(parse_payload(header, length))
