"""The one interface every frame source implements."""

from __future__ import annotations

from typing import Protocol

from appliance.frame import Frame


class SourceError(RuntimeError):
    """A source cannot start or deliver frames (no camera, camera busy, unreadable file...)."""


class Source(Protocol):
    name: str

    def start(self, width: int, height: int, fps: float, lores_size: tuple[int, int]) -> None:
        """Open the device and begin capture: main image `width`x`height`, lores (w, h) RGB."""

    def read(self) -> Frame:
        """Block until the next frame and return it. Raises SourceError when capture fails."""

    def stop(self) -> None:
        """Stop capture and release the device; start() may be called again later."""

    def set_controls(self, controls: dict[str, int]) -> None:
        """Apply image controls (brightness, contrast, saturation, sharpness, in Settings units)
        where the device supports them. Unsupported ones are ignored here: the pipeline applies
        brightness/contrast/saturation in software for sources without them."""


class Pacer:
    """Sleeps so that successive calls to wait() are 1/fps apart (sources with no clock of their own)."""

    def __init__(self, fps: float):
        import time
        self._time = time
        self.interval = 1.0 / fps
        self._next = time.monotonic()

    def wait(self) -> float:
        now = self._time.monotonic()
        if self._next > now:
            self._time.sleep(self._next - now)
            now = self._next
        # A late frame moves the schedule on rather than bursting to catch up.
        self._next = max(self._next + self.interval, now)
        return now
