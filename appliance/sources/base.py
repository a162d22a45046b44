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
