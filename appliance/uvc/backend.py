"""What the UVC server needs from the daemon, and nothing more.

The daemon (appliance/daemon.py Controller) implements this and owns the server; the server sees
the daemon only through it. The daemon reads the server's counters itself (UvcServer.status()) and
merges them into its own status, so nothing here reaches back.
"""

from __future__ import annotations

from typing import Protocol

from appliance.stream import FrameSlot, StreamFormat


class UvcBackend(Protocol):
    def start_stream(self, fmt: StreamFormat) -> FrameSlot:
        """Run the pipeline for the format the host committed. Returns at once, without waiting
        for the camera: encoded frames arrive in the returned slot once the pipeline runs, and
        keep arriving there across restarts of a failing camera. The slot is closed by
        stop_stream() or the next start_stream()."""
        ...

    def stop_stream(self) -> None:
        """The host stopped streaming: let the camera and the model idle again. Returns at
        once, without waiting for the pipeline to stop (safe on the UVC event thread)."""
        ...

    def image_controls(self) -> dict[str, int]:
        """The live value of every image control (appliance/controls.py), in UVC units."""
        ...

    def set_image_controls(self, changes: dict[str, int]) -> None:
        """Apply and save controls a host set; ValueError (naming the control) when refused, in
        which case nothing changed."""
        ...

    def set_host_state(self, connected: bool, streaming: StreamFormat | None) -> None:
        """What the host does now: attached or not, and the format it streams (None: not)."""
        ...
