"""The kernel's video ioctl interface: V4L2 structures and ioctl numbers (linux/videodev2.h) and
the UVC gadget's additions (linux/usb/g_uvc.h), for the UVC server and the V4L2 camera source.

Every ioctl number is computed from ctypes.sizeof() of the matching structure, exactly as the
kernel's _IOC() macro does, so the same code is right on x86_64, aarch64 and armv7: pointer-sized
and time-sized members (unsigned long, struct timeval) change the structure sizes there, and with
them the ioctl numbers. The _IOC bit layout (nr 8 bits, type 8, size 14, dir 2) is the generic one
shared by x86, arm and arm64.
"""

from __future__ import annotations

import ctypes
import fcntl

_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2


def _ioc(direction: int, kind: str, nr: int, struct: type) -> int:
    size = ctypes.sizeof(struct)
    assert size < (1 << 14), "ioctl argument too large for the size field"
    return (direction << 30) | (size << 16) | (ord(kind) << 8) | nr


def _iow(kind: str, nr: int, struct: type) -> int:
    return _ioc(_IOC_WRITE, kind, nr, struct)


def _ior(kind: str, nr: int, struct: type) -> int:
    return _ioc(_IOC_READ, kind, nr, struct)


def _iowr(kind: str, nr: int, struct: type) -> int:
    return _ioc(_IOC_READ | _IOC_WRITE, kind, nr, struct)


# --- linux/videodev2.h -------------------------------------------------------------------------

V4L2_CAP_VIDEO_CAPTURE = 0x00000001
V4L2_CAP_VIDEO_M2M_MPLANE = 0x00004000
V4L2_CAP_VIDEO_M2M = 0x00008000
V4L2_CAP_DEVICE_CAPS = 0x80000000
V4L2_BUF_TYPE_VIDEO_OUTPUT = 2
V4L2_MEMORY_MMAP = 1
V4L2_FIELD_NONE = 1
V4L2_COLORSPACE_SRGB = 8
V4L2_COLORSPACE_JPEG = 7


def fourcc(code: str) -> int:
    a, b, c, d = (ord(ch) for ch in code)
    return a | (b << 8) | (c << 16) | (d << 24)


V4L2_PIX_FMT_YUYV = fourcc("YUYV")
V4L2_PIX_FMT_MJPEG = fourcc("MJPG")


class v4l2_capability(ctypes.Structure):
    _fields_ = [
        ("driver", ctypes.c_char * 16),
        ("card", ctypes.c_char * 32),
        ("bus_info", ctypes.c_char * 32),
        ("version", ctypes.c_uint32),
        ("capabilities", ctypes.c_uint32),
        ("device_caps", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32 * 3),
    ]


class v4l2_pix_format(ctypes.Structure):
    _fields_ = [
        ("width", ctypes.c_uint32),
        ("height", ctypes.c_uint32),
        ("pixelformat", ctypes.c_uint32),
        ("field", ctypes.c_uint32),
        ("bytesperline", ctypes.c_uint32),
        ("sizeimage", ctypes.c_uint32),
        ("colorspace", ctypes.c_uint32),
        ("priv", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("ycbcr_enc", ctypes.c_uint32),
        ("quantization", ctypes.c_uint32),
        ("xfer_func", ctypes.c_uint32),
    ]


class _v4l2_format_union(ctypes.Union):
    # The kernel union also holds struct v4l2_window, which contains pointers: that gives the
    # union pointer alignment (8 bytes on 64-bit, 4 on armv7), hence the c_void_p member.
    _fields_ = [
        ("pix", v4l2_pix_format),
        ("raw_data", ctypes.c_uint8 * 200),
        ("_align", ctypes.c_void_p),
    ]


class v4l2_format(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("fmt", _v4l2_format_union)]


class v4l2_requestbuffers(ctypes.Structure):
    _fields_ = [
        ("count", ctypes.c_uint32),
        ("type", ctypes.c_uint32),
        ("memory", ctypes.c_uint32),
        ("capabilities", ctypes.c_uint32),
        ("flags", ctypes.c_uint8),
        ("reserved", ctypes.c_uint8 * 3),
    ]


class timeval(ctypes.Structure):
    # The native userspace struct timeval; on 32-bit ARM the kernel accepts both time layouts,
    # each under its own ioctl number, which follows from the size computed here.
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class v4l2_timecode(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("frames", ctypes.c_uint8),
        ("seconds", ctypes.c_uint8),
        ("minutes", ctypes.c_uint8),
        ("hours", ctypes.c_uint8),
        ("userbits", ctypes.c_uint8 * 4),
    ]


class _v4l2_buffer_m(ctypes.Union):
    _fields_ = [
        ("offset", ctypes.c_uint32),
        ("userptr", ctypes.c_ulong),
        ("planes", ctypes.c_void_p),
        ("fd", ctypes.c_int32),
    ]


class v4l2_buffer(ctypes.Structure):
    _fields_ = [
        ("index", ctypes.c_uint32),
        ("type", ctypes.c_uint32),
        ("bytesused", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("field", ctypes.c_uint32),
        ("timestamp", timeval),
        ("timecode", v4l2_timecode),
        ("sequence", ctypes.c_uint32),
        ("memory", ctypes.c_uint32),
        ("m", _v4l2_buffer_m),
        ("length", ctypes.c_uint32),
        ("reserved2", ctypes.c_uint32),
        ("request_fd", ctypes.c_int32),
    ]


class v4l2_event_subscription(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32 * 5),
    ]


class _v4l2_event_union(ctypes.Union):
    # struct v4l2_event_ctrl in the kernel union holds an __s64: 8-byte alignment on every arch.
    _fields_ = [("data", ctypes.c_uint8 * 64), ("_align", ctypes.c_int64)]


class v4l2_event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("u", _v4l2_event_union),
        ("pending", ctypes.c_uint32),
        ("sequence", ctypes.c_uint32),
        ("timestamp", timespec),
        ("id", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32 * 8),
    ]


VIDIOC_QUERYCAP = _ior("V", 0, v4l2_capability)
VIDIOC_S_FMT = _iowr("V", 5, v4l2_format)
VIDIOC_REQBUFS = _iowr("V", 8, v4l2_requestbuffers)
VIDIOC_QUERYBUF = _iowr("V", 9, v4l2_buffer)
VIDIOC_QBUF = _iowr("V", 15, v4l2_buffer)
VIDIOC_DQBUF = _iowr("V", 17, v4l2_buffer)
VIDIOC_STREAMON = _iow("V", 18, ctypes.c_int)
VIDIOC_STREAMOFF = _iow("V", 19, ctypes.c_int)
VIDIOC_DQEVENT = _ior("V", 89, v4l2_event)
VIDIOC_SUBSCRIBE_EVENT = _iow("V", 90, v4l2_event_subscription)

# --- linux/usb/g_uvc.h ---------------------------------------------------------------------------

V4L2_EVENT_PRIVATE_START = 0x08000000
UVC_EVENT_CONNECT = V4L2_EVENT_PRIVATE_START + 0
UVC_EVENT_DISCONNECT = V4L2_EVENT_PRIVATE_START + 1
UVC_EVENT_STREAMON = V4L2_EVENT_PRIVATE_START + 2
UVC_EVENT_STREAMOFF = V4L2_EVENT_PRIVATE_START + 3
UVC_EVENT_SETUP = V4L2_EVENT_PRIVATE_START + 4
UVC_EVENT_DATA = V4L2_EVENT_PRIVATE_START + 5
UVC_EVENTS = (UVC_EVENT_CONNECT, UVC_EVENT_DISCONNECT, UVC_EVENT_STREAMON,
              UVC_EVENT_STREAMOFF, UVC_EVENT_SETUP, UVC_EVENT_DATA)


class uvc_request_data(ctypes.Structure):
    """What UVCIOC_SEND_RESPONSE takes and UVC_EVENT_DATA carries; a negative length stalls ep0."""

    _fields_ = [("length", ctypes.c_int32), ("data", ctypes.c_uint8 * 60)]


UVCIOC_SEND_RESPONSE = _iow("U", 1, uvc_request_data)


def ioctl(fd: int, request: int, arg: ctypes.Structure | ctypes._SimpleCData) -> None:
    """ioctl() on a ctypes object, updated in place (raises OSError like every syscall wrapper)."""
    fcntl.ioctl(fd, request, arg, True)
