"""What joins the pipeline to its consumers: the negotiated output format and a latest-wins slot."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class StreamFormat:
    """The format a host committed to (or the preview asks for)."""

    encoding: Literal["mjpeg", "yuyv"]
    width: int
    height: int
    fps: float = 30.0

    def __str__(self) -> str:
        return f"{self.encoding.upper()} {self.width}x{self.height}@{self.fps:g}"


class FrameSlot:
    """Holds the newest encoded frame. A slow reader skips frames; nothing queues up unbounded."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._data: bytes | None = None
        self._seq = 0
        self._closed = False

    def put(self, data: bytes) -> None:
        with self._cond:
            self._data = data
            self._seq += 1
            self._cond.notify_all()

    def get(self, after: int = 0, timeout: float | None = None) -> tuple[int, bytes] | None:
        """Wait for a frame newer than sequence number `after`; None on timeout or close."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._seq > after or self._closed, timeout):
                return None
            if self._data is None or self._seq <= after:  # closed before anything newer came
                return None
            return self._seq, self._data

    def latest(self) -> tuple[int, bytes | None]:
        with self._cond:
            return self._seq, self._data

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
