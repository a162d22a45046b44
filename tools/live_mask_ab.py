"""Live masks of any checkout of BlurCam, measured the same way: for before/after comparisons.

    .venv/bin/python tools/live_mask_ab.py CHECKOUT [--size 1280x720] [--seconds 12]

Runs CHECKOUT's threaded pipeline on the moving demo scenes (each person swaying, every frame
with its true mask), fed like a 30 fps camera, and looks at it from outside as the settings
page's preview does: it polls the pipeline's newest output and scores the mask each frame left
with against that frame's truth. Prints one line: the offline IoU (every frame through the
pipeline one by one), the live IoU (mean, 10th percentile), the output frame rate and the
capture-to-output latency (p50, p95), all measured by this script, so that an older checkout,
whose pipeline reports fewer figures, is measured exactly like the current one. Under a CPU
budget, start it through the budget (e.g. a cgroup CFS quota) as a whole.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path)
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--seconds", type=float, default=12.0)
    args = parser.parse_args()
    root = args.checkout.resolve()
    sys.path.insert(0, str(root))  # that checkout's `appliance`, not this one's

    import cv2
    import numpy as np

    from appliance.frame import frame_from_rgb
    from appliance.pipeline import FramePipeline, ThreadedPipeline
    from appliance.settings import Settings
    from appliance.sources.base import Pacer
    from appliance.sources.demo import PEOPLE, SCENE_SECONDS, STILL_SECONDS, DemoSource
    from appliance.stream import FrameSlot, StreamFormat

    width, height = (int(v) for v in args.size.split("x"))
    settings = Settings(effect="blur")

    def new_pipeline() -> FramePipeline:
        pipeline = FramePipeline(settings)
        if hasattr(pipeline, "lores_size_for"):  # the model may depend on the frame's shape
            pipeline.lores_size_for(width, height)
        return pipeline

    lores_size = new_pipeline().lores_size
    demo = DemoSource(paced=False)
    demo.start(width, height, 30, lores_size)
    frames, truths = [], []
    for scene in range(len(PEOPLE)):  # two seconds of swaying per person
        for i in range(60):
            rgb, truth = demo.render_with_truth(scene * SCENE_SECONDS + STILL_SECONDS + i / 30)
            frames.append(frame_from_rgb(rgb, lores_size, 0.0, len(frames)))
            truths.append(cv2.resize(truth, (width // 4, height // 4), interpolation=cv2.INTER_AREA) > 0.5)

    def iou(alpha: np.ndarray, truth: np.ndarray) -> float:
        mask = cv2.resize(alpha, (truth.shape[1], truth.shape[0]), interpolation=cv2.INTER_LINEAR) > 0.5
        return float((mask & truth).sum() / max(1, (mask | truth).sum()))

    offline_pipeline = new_pipeline()
    offline = [iou(offline_pipeline.segment(f), t) for f, t in zip(frames, truths)]

    class Replay:
        """The clip, looping, paced like a 30 fps camera."""
        name = "replay"
        hardware_controls = ()

        def __init__(self) -> None:
            self.seq = -1

        def start(self, *_args) -> None:
            self.pacer = Pacer(30)

        def read(self):
            ts = self.pacer.wait()
            self.seq += 1
            return dataclasses.replace(frames[self.seq % len(frames)], timestamp=ts, sequence=self.seq)

        def stop(self) -> None:
            pass

        def set_controls(self, controls) -> None:
            pass

    runner = ThreadedPipeline(Replay(), StreamFormat("mjpeg", width, height, 30), new_pipeline(), FrameSlot())
    live, latencies, seen_at, seen = [], [], [], None
    runner.start()
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < args.seconds:
            p = runner.latest
            if p is not None and p is not seen and p.alpha_low is not None:
                seen = p
                seen_at.append(time.monotonic())
                latencies.append((time.monotonic() - p.frame.timestamp) * 1000)
                live.append(iou(p.alpha_low, truths[p.frame.sequence % len(frames)]))
            time.sleep(0.003)
    finally:
        runner.stop()
    fps = (len(seen_at) - 1) / (seen_at[-1] - seen_at[0]) if len(seen_at) > 1 else 0.0
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()

    def p10(values) -> float:
        return float(np.percentile(values, 10))

    print(f"{commit} {width}x{height}: offline IoU mean {np.mean(offline):.3f} p10 {p10(offline):.3f} | "
          f"live mean {np.mean(live):.3f} p10 {p10(live):.3f} (n={len(live)}) | "
          f"output {fps:.1f} fps | latency p50 {np.percentile(latencies, 50):.1f} "
          f"p95 {np.percentile(latencies, 95):.1f} ms", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
