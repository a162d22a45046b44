"""A small V4L2 capture client of our own: what a host application does with a webcam.

Opens a capture node, sets a format, streams with mmap'ed buffers and hands back each frame with
what the driver said about it (sequence, flags, timestamp) and when it arrived. Used inside the
test VM against uvcvideo; no test double anywhere below it.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import select
import time
from dataclasses import dataclass

from appliance import v4l2_ioctl as k

V4L2_BUF_TYPE_VIDEO_CAPTURE = 1
V4L2_BUF_FLAG_ERROR = 0x40
FOURCC = {"mjpeg": k.V4L2_PIX_FMT_MJPEG, "yuyv": k.V4L2_PIX_FMT_YUYV}


class CaptureError(RuntimeError):
    pass


@dataclass
class Received:
    data: bytes
    sequence: int
    flags: int
    timestamp: float  # the driver's buffer timestamp (CLOCK_MONOTONIC, s)
    dequeued_at: float  # time.monotonic() when DQBUF returned it

    @property
    def error(self) -> bool:
        return bool(self.flags & V4L2_BUF_FLAG_ERROR)


class Capture:
    """`with Capture(node, "mjpeg", 1280, 720) as cap: for frame in cap.frames(5, 60): ...`"""

    def __init__(self, node: str, encoding: str, width: int, height: int, buffers: int = 4):
        self.node, self.encoding, self.width, self.height = node, encoding, width, height
        self.count = buffers
        self.fd = -1
        self.maps: list[mmap.mmap] = []
        self.streaming = False

    def __enter__(self) -> Capture:
        self.fd = os.open(self.node, os.O_RDWR | os.O_NONBLOCK)
        try:
            self._set_format()
            req = k.v4l2_requestbuffers(count=self.count, type=V4L2_BUF_TYPE_VIDEO_CAPTURE,
                                        memory=k.V4L2_MEMORY_MMAP)
            k.ioctl(self.fd, k.VIDIOC_REQBUFS, req)
            for index in range(req.count):
                buf = self._buffer(index)
                k.ioctl(self.fd, k.VIDIOC_QUERYBUF, buf)
                self.maps.append(mmap.mmap(self.fd, buf.length, mmap.MAP_SHARED,
                                           mmap.PROT_READ, offset=buf.m.offset))
                k.ioctl(self.fd, k.VIDIOC_QBUF, buf)
            k.ioctl(self.fd, k.VIDIOC_STREAMON, ctypes.c_int(V4L2_BUF_TYPE_VIDEO_CAPTURE))
            self.streaming = True
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _buffer(self, index: int = 0) -> k.v4l2_buffer:
        return k.v4l2_buffer(index=index, type=V4L2_BUF_TYPE_VIDEO_CAPTURE, memory=k.V4L2_MEMORY_MMAP)

    def _set_format(self) -> None:
        fmt = k.v4l2_format(type=V4L2_BUF_TYPE_VIDEO_CAPTURE)
        fmt.fmt.pix.width, fmt.fmt.pix.height = self.width, self.height
        fmt.fmt.pix.pixelformat = FOURCC[self.encoding]
        fmt.fmt.pix.field = k.V4L2_FIELD_NONE
        k.ioctl(self.fd, k.VIDIOC_S_FMT, fmt)
        got = (fmt.fmt.pix.width, fmt.fmt.pix.height, fmt.fmt.pix.pixelformat)
        if got != (self.width, self.height, FOURCC[self.encoding]):
            raise CaptureError(f"{self.node}: asked for {self.encoding} {self.width}x{self.height}, "
                               f"the driver set {got[0]}x{got[1]} fourcc {got[2]:#x}")

    def next_frame(self, timeout: float) -> Received:
        """The next filled buffer (requeued at once); CaptureError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CaptureError(f"no frame from {self.node} within {timeout:g} s")
            if not select.select([self.fd], [], [], left)[0]:
                continue
            buf = self._buffer()
            try:
                k.ioctl(self.fd, k.VIDIOC_DQBUF, buf)
            except OSError as exc:
                if exc.errno == errno.EAGAIN:
                    continue
                raise
            now = time.monotonic()
            data = self.maps[buf.index][:buf.bytesused]
            frame = Received(bytes(data), buf.sequence, buf.flags,
                             buf.timestamp.tv_sec + buf.timestamp.tv_usec / 1e6, now)
            k.ioctl(self.fd, k.VIDIOC_QBUF, buf)
            return frame

    def frames(self, count: int, timeout: float):
        for _ in range(count):
            yield self.next_frame(timeout)

    def close(self) -> None:
        if self.fd < 0:
            return
        if self.streaming:
            try:
                k.ioctl(self.fd, k.VIDIOC_STREAMOFF, ctypes.c_int(V4L2_BUF_TYPE_VIDEO_CAPTURE))
            except OSError:
                pass  # the device may be gone (unplugged): closing frees everything anyway
            self.streaming = False
        for m in self.maps:
            m.close()
        self.maps.clear()
        os.close(self.fd)
        self.fd = -1
