"""`blurcam bench`: per-stage median milliseconds and frames per second. How speed is tracked.

Single-threaded: each stage timed on its own, OpenCV and the model held to one thread, over
pre-rendered demo frames. Threaded: the real ThreadedPipeline fed pre-rendered frames at up to
240 fps, counting what it delivers.
"""

from __future__ import annotations

import json
import resource
import statistics
import time

import cv2

from appliance.encode import encoder_for
from appliance.pipeline import FramePipeline, ThreadedPipeline
from appliance.settings import Settings
from appliance.sources.base import Pacer
from appliance.sources.demo import DemoSource
from appliance.stream import FrameSlot, StreamFormat

SIZES = ((640, 480), (1280, 720), (1920, 1080))
STAGES = ("capture", "preprocess", "inference", "refine", "composite", "encode")


class ReplaySource:
    """Cycles through frames captured beforehand at up to `fps`: measures the pipeline, not the
    camera. (A source that never blocks would starve the other threads of the GIL; a real camera
    blocks until its next frame.)"""

    name = "replay"

    def __init__(self, frames, fps: float = 240.0):
        self._frames, self._i = frames, 0
        self._pacer = Pacer(fps)

    def start(self, *args) -> None:
        pass

    def read(self):
        self._pacer.wait()
        frame = self._frames[self._i % len(self._frames)]
        self._i += 1
        frame.timestamp = time.monotonic()
        return frame

    def stop(self) -> None:
        pass

    def set_controls(self, controls) -> None:
        pass


def bench_size(width: int, height: int, settings: Settings, frames: int, seconds: float) -> dict:
    pipeline = FramePipeline(settings)
    source = DemoSource(paced=False)
    source.start(width, height, 30, pipeline.lores_size)
    captured, capture_ms = [], []
    for _ in range(max(10, frames // 3)):
        t = time.perf_counter()
        captured.append(source.read())
        capture_ms.append((time.perf_counter() - t) * 1000)

    encoder = encoder_for(StreamFormat("mjpeg", width, height), settings.jpeg_quality)
    cv2.setNumThreads(1)
    try:
        samples: dict[str, list[float]] = {k: [] for k in STAGES[1:]}
        totals, cpu_totals = [], []
        for i in range(frames):
            frame = captured[i % len(captured)]
            c0 = time.thread_time()
            t0 = time.perf_counter()
            result = pipeline.process(frame)
            t = time.perf_counter()
            encoder.encode(result.yuv)
            result.timings["encode"] = (time.perf_counter() - t) * 1000
            totals.append((time.perf_counter() - t0) * 1000)
            cpu_totals.append((time.thread_time() - c0) * 1000)
            for k in samples:
                samples[k].append(result.timings.get(k, 0.0))
    finally:
        cv2.setNumThreads(-1)  # back to OpenCV's default

    slot = FrameSlot()
    threaded = ThreadedPipeline(ReplaySource(captured), StreamFormat("mjpeg", width, height, 1000),
                                FramePipeline(settings), slot)
    threaded.start()
    time.sleep(0.5)  # warm-up: first mask, caches
    start_frames, t0 = threaded.frames_out, time.monotonic()
    time.sleep(seconds)
    produced, elapsed = threaded.frames_out - start_frames, time.monotonic() - t0
    threaded.stop()

    med = {k: round(statistics.median(v), 2) for k, v in samples.items()}
    med["capture"] = round(statistics.median(capture_ms), 2)
    total = round(statistics.median(totals), 2)
    # CPU time of the one working thread: what the frame costs, whatever else the machine runs.
    cpu_total = round(statistics.median(cpu_totals), 2)
    return {"ms": {k: med[k] for k in STAGES}, "total_ms": total, "total_cpu_ms": cpu_total,
            "fps_single_thread": round(1000 / total, 1), "fps_threaded": round(produced / elapsed, 1)}


def run_bench(model: str = "general", precision: str = "int8", sizes=SIZES, frames: int = 60,
              seconds: float = 3.0) -> dict:
    settings = Settings(model=model, precision=precision, effect="blur")
    results = {f"{w}x{h}": bench_size(w, h, settings, frames, seconds) for w, h in sizes}
    return {"model": model, "precision": precision, "sizes": results,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def format_table(report: dict) -> str:
    lines = [f"model {report['model']} / {report['precision']}; median ms per frame "
             f"(single thread); total = all stages but capture, cpu = its CPU time"]
    head = (f"{'size':>10} " + " ".join(f"{s:>10}" for s in STAGES)
            + f" {'total':>8} {'cpu':>6} {'fps 1T':>7} {'fps thr':>8}")
    lines.append(head)
    for size, r in report["sizes"].items():
        lines.append(f"{size:>10} " + " ".join(f"{r['ms'][s]:>10.2f}" for s in STAGES)
                     + f" {r['total_ms']:>8.2f} {r['total_cpu_ms']:>6.2f} {r['fps_single_thread']:>7.1f}"
                     + f" {r['fps_threaded']:>8.1f}")
    lines.append(f"peak RSS {report['peak_rss_mb']} MB")
    return "\n".join(lines)


def main(args) -> int:
    sizes = SIZES
    if args.size:
        sizes = tuple(tuple(int(v) for v in s.split("x")) for s in args.size)
    report = run_bench(args.model, args.precision, sizes, args.frames, args.seconds)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0
