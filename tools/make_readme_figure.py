"""Draw docs/pipeline.jpg: original / mask / output, side by side, from the demo camera.

    .venv/bin/python tools/make_readme_figure.py
"""

from pathlib import Path

import cv2
import numpy as np

from appliance.frame import frame_from_rgb, i420_to_rgb
from appliance.pipeline import FramePipeline
from appliance.settings import Settings
from appliance.sources.demo import DemoSource

OUT = Path(__file__).resolve().parent.parent / "docs" / "pipeline.jpg"


def label(img: np.ndarray, text: str) -> np.ndarray:
    img = img.copy()
    cv2.rectangle(img, (0, 0), (len(text) * 11 + 16, 30), (20, 20, 20), -1)
    cv2.putText(img, text, (8, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def main() -> None:
    demo = DemoSource(paced=False)
    demo.start(640, 360, 30, (256, 256))
    rows = []
    for t in (1.0, 21.0):
        rgb = demo.render(t)
        pipeline = FramePipeline(Settings(blur_strength=60))
        frame = frame_from_rgb(rgb, pipeline.lores_size, 0.0)
        result = pipeline.process(frame)
        mask = cv2.resize((result.alpha_low * 255).astype(np.uint8), (640, 360))
        rows.append(np.hstack([label(i420_to_rgb(frame.yuv), "camera"),
                               label(cv2.cvtColor(mask, cv2.COLOR_GRAY2RGB), "mask (int8 model)"),
                               label(i420_to_rgb(result.yuv), "what the host sees")]))
    figure = cv2.resize(np.vstack(rows), None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(OUT), cv2.cvtColor(figure, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    print("wrote", OUT, OUT.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
