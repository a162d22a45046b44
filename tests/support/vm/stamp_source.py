"""Test-only camera: a flat grey picture with a frame counter in it, for measuring latency.

The counter is drawn as COUNTER_BITS black/white squares across the middle of the picture (big
enough to survive JPEG), and the capture time of each counter value is appended to a log file,
so a host that reads the counter back knows how old the frame is (the VM's host and device share
one clock). `python -m tests.support.vm.stamp_source run ...` is `blurcam run` with this source
added as `--source test-stamp`; the product's own --source never offers it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from appliance.frame import Frame, split_i420
from appliance.sources.base import Pacer

SPEC = "test-stamp"
LOG_ENV = "BLURCAM_TEST_STAMP_LOG"
COUNTER_BITS = 16


def squares(width: int, height: int) -> list[tuple[int, int, int]]:
    """(x, y, side) of each counter bit's square, most significant first."""
    side = width // (COUNTER_BITS + 4)
    y = height // 2 - side // 2
    return [((2 + i) * side, y, side) for i in range(COUNTER_BITS)]


def read_counter(gray: np.ndarray) -> int:
    """The counter drawn into a picture (luma, any of the streamed sizes)."""
    h, w = gray.shape
    value = 0
    for x, y, side in squares(w, h):
        centre = gray[y + side // 4: y + 3 * side // 4, x + side // 4: x + 3 * side // 4]
        value = (value << 1) | int(centre.mean() > 128)
    return value


class StampSource:
    name = SPEC

    def __init__(self, log_path: Path):
        self.log_path = Path(log_path)
        self.counter = 0

    def start(self, width: int, height: int, fps: float, lores_size: tuple[int, int]) -> None:
        self.size = (width, height)
        self.pacer = Pacer(fps)
        # Drawn straight in I420 (grey: chroma 128), so a frame costs next to nothing to make.
        self.base = np.full((height * 3 // 2, width), 128, np.uint8)
        self.base[:height] = 96
        self.lores = np.full((lores_size[1], lores_size[0], 3), 96, np.uint8)

    def read(self) -> Frame:
        captured = self.pacer.wait()
        self.counter = (self.counter + 1) % (1 << COUNTER_BITS)
        yuv = self.base.copy()
        luma = split_i420(yuv)[0]
        w, h = self.size
        for bit, (x, y, side) in enumerate(squares(w, h)):
            on = self.counter >> (COUNTER_BITS - 1 - bit) & 1
            luma[y:y + side, x:x + side] = 255 if on else 0
        with open(self.log_path, "a") as log:
            log.write(f"{self.counter} {captured:.6f}\n")
        return Frame(yuv, self.lores.copy(), captured, self.counter)

    def stop(self) -> None:
        pass

    def set_controls(self, controls: dict[str, int]) -> None:
        pass


def main() -> int:
    import appliance.sources as sources
    from appliance.cli import main as blurcam

    product_open_source = sources.open_source

    def open_source(spec: str):
        if spec == SPEC:
            return StampSource(Path(os.environ[LOG_ENV]))
        return product_open_source(spec)

    sources.open_source = open_source  # the daemon looks it up when it opens its camera
    return blurcam(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
