"""`blurcam bench`: per-stage median milliseconds and frames per second. How speed is tracked.

Every figure comes from the moving demo clip (people swaying, `sources.demo.moving_clip`),
rendered beforehand so that the camera's cost is measured apart ("capture").

- Single thread: each stage timed on its own, OpenCV and the model held to one thread; "cpu" is
  the CPU time of the whole frame (what it costs whatever else the machine runs).
- Threaded: the real ThreadedPipeline fed as fast as it takes frames (up to 240 fps): the most
  frames per second it can deliver, every frame with its own mask.
- Live: the ThreadedPipeline fed like a camera, at 30 fps: the output rate, the capture-to-output
  latency (p50/p95), the age of the mask applied (in frames) and the share of frames dropped.

Run it under `tools/cpu-limit`-style CPU budgets to see Pi-class figures.
"""

from __future__ import annotations

import json
import math
import resource
import statistics
import sys
import time
from dataclasses import replace

import cv2
import numpy as np

from appliance.encode import encoder_for
from appliance.pipeline import FramePipeline, LiveStats, ThreadedPipeline
from appliance.settings import Settings
from appliance.sources.demo import DemoSource, ReplaySource, moving_clip
from appliance.stream import FrameSlot, StreamFormat

SIZES = ((640, 360), (640, 480), (1280, 720), (1920, 1080))
STAGES = ("capture", "preprocess", "inference", "refine", "composite", "encode")
LIVE_FPS = 30.0


def capture_ms(width: int, height: int, lores_size: tuple[int, int], frames: int = 10) -> float:
    """The demo camera's cost per frame: rendering the scene and converting it (on a Pi the ISP
    delivers YUV and the small image instead)."""
    source = DemoSource(paced=False)
    source.start(width, height, 30, lores_size)
    samples = []
    for _ in range(frames):
        t = time.perf_counter()
        source.read()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def run_threaded(frames, fmt: StreamFormat, settings: Settings, fps: float, seconds: float,
                 warmup: float = 0.5, patience: float = 60.0) -> tuple[float, float, LiveStats]:
    """Run the threaded pipeline on `frames` replayed at up to `fps`; (output fps, the seconds
    measured, stats of the measured window). The window opens `warmup` seconds after the first
    frame has left (interpreters loaded, caches warm) and lasts `seconds`, longer if fewer than
    two frames left in it (a rate needs two), at most `patience` seconds each."""
    runner = ThreadedPipeline(ReplaySource(frames, fps), fmt, FramePipeline(settings), FrameSlot())
    runner.start()
    try:
        _wait_for(lambda: runner.frames_out > 0 or runner.error is not None, patience)
        time.sleep(warmup)
        t0 = time.monotonic()
        start_frames, start_dropped = runner.frames_out, runner.frames_dropped
        time.sleep(seconds)
        _wait_for(lambda: runner.frames_out - start_frames >= 2 or runner.error is not None, patience)
        stats = runner.stats()
        produced, dropped = runner.frames_out - start_frames, runner.frames_dropped - start_dropped
        elapsed = time.monotonic() - t0
    finally:
        runner.stop()
    if runner.error is not None:
        raise RuntimeError(f"the threaded pipeline failed: {runner.error}")
    # Counts of the measured window only (not the warm-up).
    return produced / elapsed, elapsed, replace(stats, frames_dropped=dropped, frames_out=produced)


def _wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


def bench_size(width: int, height: int, settings: Settings, frames: int, seconds: float,
               say=lambda text: None) -> dict:
    say(f"{width}x{height}: timing each stage over {frames} frames")
    pipeline = FramePipeline(settings)
    lores_size = pipeline.lores_size_for(width, height)
    # 8 frames of each person: enough variety, and a 1080p clip stays at ~80 MB.
    clip = moving_clip(width, height, lores_size, fps=LIVE_FPS, seconds_per_scene=8 / LIVE_FPS)
    encoder = encoder_for(StreamFormat("mjpeg", width, height), settings.jpeg_quality)
    cv2.setNumThreads(1)
    try:
        samples: dict[str, list[float]] = {k: [] for k in STAGES[1:]}
        totals, cpu_totals = [], []
        masks = []  # (frame, its mask) for the framing measurement
        for i in range(frames + 5):
            frame = clip.frames[i % len(clip)]
            c0 = time.thread_time()
            t0 = time.perf_counter()
            result = pipeline.process(frame)
            t = time.perf_counter()
            encoder.encode(result.yuv)
            result.timings["encode"] = (time.perf_counter() - t) * 1000
            masks.append((frame, result.alpha_low))
            if i < 5:
                continue  # warm-up: caches, the allocator's heap
            totals.append((time.perf_counter() - t0) * 1000)
            cpu_totals.append((time.thread_time() - c0) * 1000)
            for k in samples:
                samples[k].append(result.timings.get(k, 0.0))
        framing = framing_ms(masks, settings)
    finally:
        cv2.setNumThreads(-1)  # back to OpenCV's default

    fmt = StreamFormat("mjpeg", width, height, LIVE_FPS)
    say(f"{width}x{height}: threaded pipeline as fast as it goes for {seconds:g} s")
    fps_threaded, _, _ = run_threaded(clip.frames, fmt, settings, 240.0, seconds)
    say(f"{width}x{height}: live at {LIVE_FPS:g} fps for {seconds:g} s")
    live_fps, live_seconds, live = run_threaded(clip.frames, fmt, settings, LIVE_FPS, seconds)

    med = {k: round(statistics.median(v), 2) for k, v in samples.items()}
    med["capture"] = round(capture_ms(width, height, lores_size), 2)
    total = round(statistics.median(totals), 2)
    # CPU time of the one working thread: what the frame costs, whatever else the machine runs.
    cpu_total = round(statistics.median(cpu_totals), 2)
    offered = live.frames_out + live.frames_dropped
    return {"model": pipeline.model_key[0],
            "ms": {k: med[k] for k in STAGES}, "total_ms": total, "total_cpu_ms": cpu_total,
            "fps_single_thread": round(1000 / total, 1), "fps_threaded": round(fps_threaded, 1),
            "framing": framing,
            "live": {"camera_fps": LIVE_FPS, "fps": round(live_fps, 1),
                     "latency_p50_ms": _round(live.latency_p50_ms), "latency_p95_ms": _round(live.latency_p95_ms),
                     "mask_age_frames": live.mask_age_frames,
                     "dropped_pct": round(100 * live.frames_dropped / offered, 1) if offered else 0.0,
                     "frames_out": live.frames_out, "frames_dropped": live.frames_dropped,
                     "seconds": round(live_seconds, 3),
                     "segment_workers": live.segment_workers}}


def framing_ms(masks, settings: Settings) -> dict[str, float | None]:
    """Auto-framing's cost in software (the virtual camera, and the crop of picture and mask),
    median wall and CPU milliseconds per frame while zoomed in; off by default, so not part of
    "total". The clip loops for 3 s of its own time first, so the camera has zoomed in and crops
    every frame of the timed pass."""
    pipeline = FramePipeline(settings.model_copy(update={"framing": "auto"}))
    warmup_passes = max(1, math.ceil(3.0 * LIVE_FPS / len(masks)))
    wall, cpu = [], []
    for run in range(warmup_passes + 1):
        for i, (frame, alpha) in enumerate(masks):
            c, t = time.thread_time(), time.perf_counter()
            framed, _ = pipeline.reframe(frame, alpha, at=(run * len(masks) + i) / LIVE_FPS)
            if run == warmup_passes and framed.view is not None and framed.view[2] < frame.width:
                wall.append((time.perf_counter() - t) * 1000)
                cpu.append((time.thread_time() - c) * 1000)
    return {"ms": round(statistics.median(wall), 2) if wall else None,
            "cpu_ms": round(statistics.median(cpu), 2) if cpu else None}


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def run_bench(model: str = "auto", precision: str = "int8", sizes=SIZES, frames: int = 60,
              seconds: float = 3.0, say=lambda text: None) -> dict:
    """`say(text)` hears what is being measured, as it starts."""
    settings = Settings(model=model, precision=precision, effect="blur")
    results = {f"{w}x{h}": bench_size(w, h, settings, frames, seconds, say) for w, h in sizes}
    return {"model": model, "precision": precision, "sizes": results,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def format_table(report: dict) -> str:
    lines = [f"model {report['model']} / {report['precision']}; median ms per frame "
             f"(single thread); total = all stages but capture, cpu = its CPU time"]
    lines.append(f"{'size':>10} {'model':>9} " + " ".join(f"{s:>10}" for s in STAGES)
                 + f" {'total':>8} {'cpu':>6} {'fps 1T':>7} {'fps thr':>8}")
    for size, r in report["sizes"].items():
        lines.append(f"{size:>10} {r['model']:>9} " + " ".join(f"{r['ms'][s]:>10.2f}" for s in STAGES)
                     + f" {r['total_ms']:>8.2f} {r['total_cpu_ms']:>6.2f} {r['fps_single_thread']:>7.1f}"
                     + f" {r['fps_threaded']:>8.1f}")
    lines.append(f"live, camera at {LIVE_FPS:g} fps: output fps, capture-to-output latency, "
                 f"age of the applied mask, frames dropped")
    lines.append(f"{'size':>10} {'fps':>6} {'p50 ms':>7} {'p95 ms':>7} {'mask age':>9} {'dropped':>8} {'workers':>8}")
    for size, r in report["sizes"].items():
        lv = r["live"]
        age = "-" if lv["mask_age_frames"] is None else f"{lv['mask_age_frames']} fr"
        lines.append(f"{size:>10} {lv['fps']:>6.1f} {_fmt(lv['latency_p50_ms']):>7} {_fmt(lv['latency_p95_ms']):>7}"
                     f" {age:>9} {lv['dropped_pct']:>7.1f}% {lv['segment_workers']:>8}")
    lines.append("auto-framing in software (virtual camera + crop of picture and mask), per frame: "
                 + ", ".join(f"{size} {r['framing']['ms']} ms ({r['framing']['cpu_ms']} cpu)"
                             for size, r in report["sizes"].items()))
    lines.append(f"peak RSS {report['peak_rss_mb']} MB")
    return "\n".join(lines)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def carry_study(width: int = 1280, height: int = 720, ages=(1, 2, 3, 5),
                seconds_per_scene: float = 2.0) -> dict:
    """Why the pipeline waits for each frame's own mask: on the moving demo clip, the mask IoU
    against the truth (10th percentile, mean) of a frame's own mask, of an older frame's mask
    pasted as it is, and of that mask carried forward by optical flow measured on the small
    images (DIS); and the CPU time of the flow against the model's."""
    from appliance.selftest import mask_iou
    cv2.setNumThreads(1)
    pipeline = FramePipeline(Settings())
    clip = moving_clip(width, height, pipeline.lores_size_for(width, height), fps=LIVE_FPS,
                       seconds_per_scene=seconds_per_scene)
    own = [pipeline.segment(f) for f in clip.frames]
    grays = [cv2.cvtColor(f.lores, cv2.COLOR_RGB2GRAY) for f in clip.frames]
    flow = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    h, w = own[0].shape
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))

    def carried(i: int, j: int) -> np.ndarray:  # mask j moved to frame i
        # where each pixel of frame i was in frame j. OpenCV's stubs want an array for the flow
        # argument; None (the binding allocates it) is what OpenCV documents and runs.
        f = flow.calc(grays[i], grays[j], None)  # type: ignore[call-overload]
        return cv2.remap(own[j], grid_x + f[..., 0], grid_y + f[..., 1], cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)

    def summary(values) -> tuple[float, float]:
        return round(float(np.percentile(values, 10)), 3), round(float(np.mean(values)), 3)

    per_scene = len(clip) // 3
    report: dict = {"size": f"{width}x{height}", "own": summary([mask_iou(a, t) for a, t in zip(own, clip.truths)]),
                    "older": {}}
    for k in ages:
        pairs = [(i, i - k) for i in range(k, len(clip)) if i // per_scene == (i - k) // per_scene]
        report["older"][k] = {"pasted": summary([mask_iou(own[j], clip.truths[i]) for i, j in pairs]),
                              "carried": summary([mask_iou(carried(i, j), clip.truths[i]) for i, j in pairs])}
    flow_cpu, model_cpu = [], []
    segmenter = pipeline.segmenter
    for i in range(1, min(31, len(clip))):
        c = time.thread_time()
        carried(i, i - 1)
        flow_cpu.append((time.thread_time() - c) * 1000)
        tensor = segmenter.preprocess(clip.frames[i].lores)
        c = time.thread_time()
        segmenter.infer(tensor)
        model_cpu.append((time.thread_time() - c) * 1000)
    report["cpu_ms"] = {"flow": round(statistics.median(flow_cpu), 2), "model": round(statistics.median(model_cpu), 2),
                        "model_name": pipeline.model_key[0], "model_input": f"{w}x{h}"}
    return report


def format_carry(r: dict) -> str:
    lines = [f"mask IoU vs truth on the moving demo clip, {r['size']}, 10th percentile (mean):",
             f"  own mask: {r['own'][0]:.3f} ({r['own'][1]:.3f})"]
    for k, v in r["older"].items():
        lines.append(f"  mask {k} frame(s) old: pasted {v['pasted'][0]:.3f} ({v['pasted'][1]:.3f}), "
                     f"carried by flow {v['carried'][0]:.3f} ({v['carried'][1]:.3f})")
    c = r["cpu_ms"]
    lines.append(f"CPU per frame: flow and warp {c['flow']:.2f} ms, model {c['model']:.2f} ms "
                 f"({c['model_name']}, {c['model_input']})")
    return "\n".join(lines)


def main(args) -> int:
    if getattr(args, "carry", False):
        report = carry_study()
        print(json.dumps(report, indent=2) if args.json else format_carry(report))
        return 0
    sizes = tuple(args.size) if args.size else SIZES  # (width, height) pairs: cli.frame_size
    report = run_bench(args.model, args.precision, sizes, args.frames, args.seconds,
                       say=lambda text: print(f"bench: {text} ...", file=sys.stderr, flush=True))
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0
