"""How a camera frame should be fed to the models, measured on the evaluation set.

    .venv/bin/python -m models.preprocessing          # the tables in models/README.md

Each variant turns the evaluation composites (people standing in from the bottom edge, see
evalset.py) into the model's input in its own way, runs the app's int8 model and scores the mask
against the composite's truth: IoU (mean and 10th percentile) and the recall of the person in the
bottom tenth of the rows, where the body meets the frame's edge. The frames are 16:9 (1280x720,
as most UVC formats) and 4:3 (640x480).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import cv2
import numpy as np

from appliance.segment import Segmenter, load_segmenter, model_for, model_input
from models import evalset


@dataclass(frozen=True)
class Variant:
    name: str
    model: str                 # "general", "landscape", or "auto" (what the app picks)
    interpolation: int = cv2.INTER_LINEAR
    letterbox: bool = False    # keep the aspect ratio, pad with black (instead of stretching)
    signed_range: bool = False  # feed [-1, 1] instead of the model card's [0, 1] (float model only)


VARIANTS = (
    Variant("app: auto model, stretched, area", "auto", cv2.INTER_AREA),
    Variant("general, stretched, area (before)", "general", cv2.INTER_AREA),
    Variant("general, stretched, bilinear", "general"),
    Variant("general, letterboxed, bilinear", "general", letterbox=True),
    Variant("general float, values in [-1, 1]", "general", signed_range=True),
    Variant("landscape, stretched, area", "landscape", cv2.INTER_AREA),
    Variant("landscape, stretched, bilinear", "landscape"),
)


def person_probability(seg: Segmenter, rgb: np.ndarray, v: Variant) -> np.ndarray:
    """The model's person probability for `rgb` fed the variant's way, at the frame's size."""
    h, w = rgb.shape[:2]
    box = (0, 0, seg.height, seg.width)
    if v.letterbox:
        s = min(seg.width / w, seg.height / h)
        nw, nh = round(w * s), round(h * s)
        top, left = (seg.height - nh) // 2, (seg.width - nw) // 2
        inner = cv2.resize(rgb, (nw, nh), interpolation=v.interpolation)
        small = cv2.copyMakeBorder(inner, top, seg.height - nh - top, left, seg.width - nw - left,
                                   cv2.BORDER_CONSTANT, value=0)
        box = (top, left, nh, nw)
    elif v.interpolation == cv2.INTER_AREA:
        small = model_input(rgb, seg.input_size)
    else:
        small = cv2.resize(rgb, seg.input_size, interpolation=v.interpolation)
    prob = seg(small) if not v.signed_range else seg.infer((small.astype(np.float32) / 127.5 - 1.0)[None])
    t, left, nh, nw = box
    return cv2.resize(prob[t:t + nh, left:left + nw], (w, h), interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True)
class Score:
    iou_mean: float
    iou_p10: float
    bottom_recall_mean: float
    bottom_recall_p10: float


def score(frames: list[evalset.Frame], v: Variant) -> Score:
    ious, recalls = [], []
    segmenters: dict[str, Segmenter] = {}
    for f in frames:
        h, w = f.rgb.shape[:2]
        name = model_for(v.model, w, h)
        precision = "float" if v.signed_range else "int8"
        seg = segmenters.setdefault(name, load_segmenter(name, precision))
        mask = person_probability(seg, f.rgb, v) > 0.5
        truth = f.truth > 0.5
        ious.append((mask & truth).sum() / max(1, (mask | truth).sum()))
        rows = h // 10
        bottom = truth[-rows:]
        if bottom.sum() > 50:
            recalls.append((mask[-rows:] & bottom).sum() / bottom.sum())
    return Score(float(np.mean(ious)), float(np.percentile(ious, 10)),
                 float(np.mean(recalls)), float(np.percentile(recalls, 10)))


def bottom_edge(frame: evalset.Frame, v: Variant, rows: int = 72) -> tuple[float, float]:
    """(recall of the person in the bottom `rows` rows, share of the person lost) on one frame."""
    name = model_for(v.model, frame.rgb.shape[1], frame.rgb.shape[0])
    seg = load_segmenter(name, "float" if v.signed_range else "int8")
    mask = person_probability(seg, frame.rgb, v) > 0.5
    body = frame.truth > 0.5
    return (float((mask[-rows:] & body[-rows:]).sum() / body[-rows:].sum()),
            float((body & ~mask).sum() / body.sum()))


def composites(width: int, height: int, count: int = 60) -> list[evalset.Frame]:
    reference = load_segmenter("general", "float")  # the truth's cut-outs, as models/build.py makes them
    return evalset.evaluation_set(reference, count=count, hard_count=0, width=width, height=height).composites


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=60, help="composites per frame size")
    args = parser.parse_args()
    print("| frames | feeding | IoU vs truth: mean / p10 | bottom-edge recall: mean / p10 |")
    print("|---|---|---|---|")
    for width, height in ((1280, 720), (640, 480)):
        frames = composites(width, height, args.count)
        for v in VARIANTS:
            s = score(frames, v)
            print(f"| {width}x{height} | {v.name} | {s.iou_mean:.3f} / {s.iou_p10:.3f} | "
                  f"{s.bottom_recall_mean:.3f} / {s.bottom_recall_p10:.3f} |")
    edge = evalset.astronaut_at_the_bottom_edge(load_segmenter("general", "float"), 1280, 720)
    print("\n| the astronaut at the bottom edge, 1280x720 over grass | recall in the bottom 72 rows | "
          "share of the person lost (blurred) |")
    print("|---|---|---|")
    for v in VARIANTS:
        recall, lost = bottom_edge(edge, v)
        print(f"| {v.name} | {recall:.3f} | {lost:.3f} |")


if __name__ == "__main__":
    main()
