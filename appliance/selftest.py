"""`blurcam selftest`: the real pipeline on demo frames, checked against the demo's ground truth.

Used on the device and in the image build (under qemu) to prove that the model loads, runs, and
that the output really has a blurred background and an untouched person.
"""

from __future__ import annotations

import cv2
import numpy as np

from appliance.encode import MjpegEncoder
from appliance.frame import frame_from_rgb, i420_to_rgb
from appliance.pipeline import FramePipeline
from appliance.settings import Settings
from appliance.sources.demo import DemoSource


def detail(gray: np.ndarray, region: np.ndarray) -> float:
    """High-frequency energy (mean |Laplacian|) inside a region."""
    lap = np.abs(cv2.Laplacian(gray.astype(np.float32), cv2.CV_32F))
    return float(lap[region].mean())


def psnr(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
    err = np.mean((a[region].astype(np.float32) - b[region].astype(np.float32)) ** 2)
    return float("inf") if err == 0 else float(10 * np.log10(255 ** 2 / err))


def check_frame(rgb: np.ndarray, truth: np.ndarray, settings: Settings) -> dict:
    """Process one frame and measure it against the true mask."""
    h, w = truth.shape
    pipeline = FramePipeline(settings)
    frame = frame_from_rgb(rgb, pipeline.lores_size, 0.0)
    result = pipeline.process(frame)
    out = i420_to_rgb(result.yuv)
    MjpegEncoder(settings.jpeg_quality).encode(result.yuv)  # the encoder must work too
    inp = i420_to_rgb(frame.yuv)
    margin = np.ones((max(3, h // 40),) * 2, np.uint8)
    person = cv2.erode((truth > 0.99).astype(np.uint8), margin).astype(bool)
    background = cv2.erode((truth < 0.01).astype(np.uint8), margin * 3).astype(bool)
    mask = cv2.resize(result.alpha_low, (w, h)) > 0.5
    truth_b = truth > 0.5
    gray_in, gray_out = cv2.cvtColor(inp, cv2.COLOR_RGB2GRAY), cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
    return {
        "mask_iou": float((mask & truth_b).sum() / max(1, (mask | truth_b).sum())),
        "person_psnr_db": psnr(inp, out, person),
        "background_detail_ratio": detail(gray_out, background) / max(1e-6, detail(gray_in, background)),
    }


def run_selftest(model: str = "general", precision: str = "int8") -> tuple[bool, list[str]]:
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


def main(args) -> int:
    ok, lines = run_selftest(args.model, args.precision)
    print("\n".join(lines))
    print("selftest passed" if ok else "selftest FAILED")
    return 0 if ok else 1
