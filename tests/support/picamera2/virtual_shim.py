"""TEST-ONLY glue that lets PyPI picamera2 run on libcamera's virtual camera on a PC.

Never imported by the product. It supplies what only Raspberry Pi OS / Pi hardware has:
1. `pykms` (Raspberry Pi OS's DRM binding, imported by picamera2's preview code) and `pidng`
   (DNG writing, a C build; the rootfs leaves it out): stubs that fail if ever used.
2. The Raw stream role, which the virtual pipeline rejects: picamera2 asks for it to list sensor
   modes; report the camera's processed modes instead (as picamera2 does for USB cameras).
3. /dev/dma_heap (absent on a PC): buffers come from memfds, one libcamera plane per format
   plane, instead of picamera2's DmaAllocator.
Import it before picamera2 is used.
"""

from __future__ import annotations

import mmap
import os
import sys
import types


class _Unavailable:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("not available in the picamera2 test rootfs (virtual_shim stub)")


def _stub_module(name: str, **attributes) -> None:
    try:
        __import__(name)
    except ImportError:
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        sys.modules[name] = module


_stub_module("pykms", PixelFormat=type("PixelFormat", (), {"__getattr__": lambda self, name: name})())
_stub_module("pidng")
_stub_module("pidng.core", PICAM2DNG=_Unavailable)
_stub_module("pidng.camdefs", Picamera2Camera=_Unavailable)

import libcamera  # noqa: E402
import picamera2.picamera2 as picamera2_module  # noqa: E402
from picamera2 import Picamera2  # noqa: E402
from picamera2.allocators import DmaAllocator  # noqa: E402
from picamera2.allocators.allocator import Allocator, Sync  # noqa: E402

_original_raw_modes = Picamera2._get_raw_modes


def _raw_modes(self):
    if self.camera.generate_configuration([libcamera.StreamRole.Raw]) is not None:
        return _original_raw_modes(self)
    formats = self.camera.generate_configuration([libcamera.StreamRole.Viewfinder]).at(0).formats
    return [{"format": str(pix), "size": (s.width, s.height)}
            for pix in formats.pixel_formats for s in formats.sizes(pix)]


def plane_layout(fmt: str, stride: int, height: int, frame_size: int) -> list[tuple[int, int]]:
    """(offset, length) of each plane of one frame buffer."""
    y = stride * height
    if fmt in ("NV12", "NV21"):
        return [(0, y), (y, frame_size - y)]
    if fmt in ("YUV420", "YVU420"):
        c = (frame_size - y) // 2
        return [(0, y), (y, c), (y + c, c)]
    return [(0, frame_size)]


class MemfdAllocator(DmaAllocator):
    """DmaAllocator's bookkeeping (picamera2 reads its fields) over memfd-backed buffers."""

    def __init__(self):
        Allocator.__init__(self)
        self.dmaHeap = None
        self.mapped_buffers = {}
        self.mapped_buffers_used = {}
        self.frame_buffers = {}
        self.open_fds = []
        self.libcamera_fds = []
        self.sync = self.MemfdSync

    def allocate(self, libcamera_config, _use_case):
        self.libcamera_fds = []
        self.cleanup()
        for fd in self.open_fds:
            os.close(fd)
        self.open_fds, self.frame_buffers = [], {}
        for stream_config in libcamera_config:
            size = stream_config.frame_size
            layout = plane_layout(str(stream_config.pixel_format), stream_config.stride,
                                  stream_config.size.height, size)
            buffers = []
            for i in range(stream_config.buffer_count):
                fd = os.memfd_create(f"picamera2-test-{i}", os.MFD_CLOEXEC)
                os.ftruncate(fd, size)
                self.open_fds.append(fd)
                planes = []
                for offset, length in layout:
                    plane = libcamera.FrameBuffer.Plane()
                    plane.fd, plane.offset, plane.length = fd, offset, length
                    planes.append(plane)
                fb = libcamera.FrameBuffer(planes)
                key = fb.planes[0].fd  # libcamera keeps its own dup of the fd; picamera2 keys on it
                self.libcamera_fds.append(key)
                self.mapped_buffers_used[key] = False
                self.mapped_buffers[fb] = mmap.mmap(fd, size, mmap.MAP_SHARED,
                                                    mmap.PROT_READ | mmap.PROT_WRITE)
                buffers.append(fb)
            self.frame_buffers[stream_config.stream] = buffers

    class MemfdSync(Sync):
        def __init__(self, allocator, fb, write):
            self.allocator, self.fb = allocator, fb

        def __enter__(self):
            return self.allocator.mapped_buffers[self.fb]

        def __exit__(self, *args):
            return None


Picamera2._get_raw_modes = _raw_modes
picamera2_module.DmaAllocator = MemfdAllocator  # what Picamera2.__init__ and close() construct
