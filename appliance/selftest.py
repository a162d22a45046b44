"""`blurcam selftest`: the real pipeline on demo frames, checked against the demo's ground truth.

Used on the device and in the image build (under qemu) to prove that the model loads, runs, and
that the output really has a blurred background and an untouched person. `--live` runs the
threaded pipeline on moving demo scenes fed like a camera and compares the mask applied to each
frame that left with the truth, against the same frames processed one by one.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from appliance.encode import MjpegEncoder
from appliance.frame import frame_from_rgb, i420_to_rgb
from appliance.pipeline import FramePipeline, Processed, ThreadedPipeline
from appliance.settings import Settings
from appliance.sources.demo import DemoSource, ReplaySource, moving_clip
from appliance.stream import FrameSlot, StreamFormat


def detail(gray: np.ndarray, region: np.ndarray) -> float:
    """High-frequency energy (mean |Laplacian|) inside a region."""
    lap = np.abs(cv2.Laplacian(gray.astype(np.float32), cv2.CV_32F))
    return float(lap[region].mean())


def psnr(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
    err = np.mean((a[region].astype(np.float32) - b[region].astype(np.float32)) ** 2)
    return float("inf") if err == 0 else float(10 * np.log10(255 ** 2 / err))


def judged_regions(truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(person, background) of a true mask (float 0..1), each eroded away from the outline, where
    a soft edge is no one's fault: the person by 1/40 of the height, the background by three times
    that (the blur spreads the person a little way out)."""
    h = truth.shape[0]
    margin = np.ones((max(3, h // 40),) * 2, np.uint8)
    person = cv2.erode((truth > 0.99).astype(np.uint8), margin).astype(bool)
    background = cv2.erode((truth < 0.01).astype(np.uint8), margin * 3).astype(bool)
    return person, background


def check_frame(rgb: np.ndarray, truth: np.ndarray, settings: Settings) -> dict:
    """Process one frame and measure it against the true mask."""
    h, w = truth.shape
    pipeline = FramePipeline(settings)
    frame = frame_from_rgb(rgb, pipeline.lores_size_for(w, h), 0.0)
    result = pipeline.process(frame)
    out = i420_to_rgb(result.yuv)
    MjpegEncoder(settings.jpeg_quality).encode(result.yuv)  # the encoder must work too
    inp = i420_to_rgb(frame.yuv)
    person, background = judged_regions(truth)
    assert result.alpha_low is not None, "the blur effect segments every frame"
    mask = cv2.resize(result.alpha_low, (w, h)) > 0.5
    truth_b = truth > 0.5
    gray_in, gray_out = cv2.cvtColor(inp, cv2.COLOR_RGB2GRAY), cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
    return {
        "mask_iou": float((mask & truth_b).sum() / max(1, (mask | truth_b).sum())),
        "person_psnr_db": psnr(inp, out, person),
        "background_detail_ratio": detail(gray_out, background) / max(1e-6, detail(gray_in, background)),
    }


def run_selftest(model: str = "auto", precision: str = "int8") -> tuple[bool, list[str]]:
    settings = Settings(model=model, precision=precision, effect="blur", blur_strength=60)
    demo = DemoSource(paced=False)
    demo.start(640, 360, 30, (256, 256))
    lines, ok = [], True
    for t in (1.0, 11.0, 21.0):  # one scene per person
        r = check_frame(*demo.render_with_truth(t), settings)
        good = r["mask_iou"] > 0.85 and r["person_psnr_db"] > 26 and r["background_detail_ratio"] < 0.25
        ok &= good
        lines.append(f"{'ok  ' if good else 'FAIL'} scene t={t:>4}: mask IoU {r['mask_iou']:.3f} (>0.85), "
                     f"person PSNR {r['person_psnr_db']:.1f} dB (>26), "
                     f"background detail kept {r['background_detail_ratio']:.1%} (<25%)")
    return ok, lines


def mask_iou(alpha_low: np.ndarray, truth: np.ndarray) -> float:
    """IoU of the person (alpha > 0.5, at model resolution) with a true mask (bool, any size)."""
    mask = cv2.resize(alpha_low, (truth.shape[1], truth.shape[0]), interpolation=cv2.INTER_LINEAR) > 0.5
    return float((mask & truth).sum() / max(1, (mask | truth).sum()))


def run_live_selftest(model: str = "auto", precision: str = "int8", size: tuple[int, int] = (640, 360),
                      seconds_per_scene: float = 2.0) -> tuple[bool, list[str]]:
    """One pass of the moving demo clip through the threaded pipeline at 30 fps."""
    settings = Settings(model=model, precision=precision, effect="blur")
    w, h = size
    offline_pipeline = FramePipeline(settings)
    clip = moving_clip(w, h, offline_pipeline.lores_size_for(w, h), fps=30, seconds_per_scene=seconds_per_scene)
    # Offline: every frame, in order, its own mask (as `blurcam process` does).
    offline = [mask_iou(offline_pipeline.segment(f), t) for f, t in zip(clip.frames, clip.truths)]

    live: dict[int, float] = {}
    done = threading.Event()

    def record(result: Processed) -> None:
        seq = result.frame.sequence
        if seq >= len(clip):
            done.set()  # one pass is enough
        elif result.alpha_low is not None:
            live[seq] = mask_iou(result.alpha_low, clip.truths[seq])

    runner = ThreadedPipeline(ReplaySource(clip.frames, clip.fps), StreamFormat("mjpeg", w, h, clip.fps),
                              FramePipeline(settings), FrameSlot(), on_output=record)
    runner.start()
    try:
        done.wait(len(clip) / clip.fps + 10.0)
        stats = runner.stats()
    finally:
        runner.stop()
    lines = []
    if runner.error is not None or len(live) < 10:
        return False, [f"FAIL the live pipeline delivered {len(live)} frames ({runner.error or 'too few'})"]
    got = np.array([live[i] for i in sorted(live)])
    same = np.array([offline[i] for i in sorted(live)])
    p10 = float(np.percentile(got, 10))
    p10_same = float(np.percentile(same, 10))
    good = p10 >= p10_same - 0.03 and stats.mask_age_frames == 0
    lines.append(f"live {w}x{h}: {len(live)} of {len(clip)} frames out ({stats.fps:.1f} fps), latency "
                 f"p50 {stats.latency_p50_ms:.0f} ms, p95 {stats.latency_p95_ms:.0f} ms, mask age "
                 f"{stats.mask_age_frames} frames, {runner.segment_workers} model worker(s)")
    lines.append(f"offline, every frame: mask IoU mean {np.mean(offline):.3f}, p10 {np.percentile(offline, 10):.3f}")
    lines.append(f"offline, same frames: mask IoU mean {same.mean():.3f}, p10 {p10_same:.3f}")
    lines.append(f"{'ok  ' if good else 'FAIL'} live:           mask IoU mean {got.mean():.3f}, p10 {p10:.3f} "
                 f"(p10 within 0.03 of offline)")
    return good, lines


def main(args) -> int:
    if getattr(args, "live", False):
        ok, lines = run_live_selftest(args.model, args.precision, args.size or (640, 360))
    else:
        ok, lines = run_selftest(args.model, args.precision)
    print("\n".join(lines))
    print("selftest passed" if ok else "selftest FAILED")
    return 0 if ok else 1
