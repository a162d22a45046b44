"""The demo camera, wrapped to count opens and closes and to fail or hang on cue (the faults a
real camera shows: unplugged, stops delivering, a driver that hangs on stop)."""

from __future__ import annotations

import threading

from appliance.sources.base import SourceError
from appliance.sources.demo import DemoSource


class FaultyCamera(DemoSource):
    """The demo camera, counting starts and stops, failing or hanging when told to."""

    def __init__(self) -> None:
        super().__init__()
        self.starts = self.stops = 0
        self.fail_start = False
        self.fail_read_after: int | None = None
        self.start_gate: threading.Event | None = None  # start() waits for it
        self.stop_gate: threading.Event | None = None  # stop() waits for it
        self.read_gate: threading.Event | None = None  # read() waits for it (a slow first frame)
        self.reads = 0

    def start(self, width, height, fps, lores_size):
        self.starts += 1
        if self.start_gate is not None:
            self.start_gate.wait()
        if self.fail_start:
            raise SourceError("camera unplugged")
        self.reads = 0
        super().start(width, height, fps, lores_size)

    def read(self):
        if self.read_gate is not None:
            self.read_gate.wait()
        self.reads += 1
        if self.fail_read_after is not None and self.reads > self.fail_read_after:
            raise SourceError("camera stopped delivering frames")
        return super().read()

    def stop(self):
        if self.stop_gate is not None:
            self.stop_gate.wait()
        self.stops += 1
        super().stop()
