"""Re-create the demo source's people: cut-outs from package-shipped public-domain photos.

scikit-image's `astronaut` (NASA) and `camera`, and matplotlib's `grace_hopper` sample, each cut
out with the selfie model itself. Run once when the model or the photos change; the outputs are
committed (a JPEG and an alpha PNG each, a few tens of KB).
    .venv/bin/python tools/make_demo_assets.py [MODEL.tflite]
"""

import sys
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import skimage.data

from appliance.segment import Segmenter, model_path

OUT = Path(__file__).resolve().parent.parent / "appliance" / "sources" / "demo_assets"


def photos() -> dict[str, np.ndarray]:
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return {
        "astronaut": skimage.data.astronaut(),
        "grace_hopper": cv2.cvtColor(cv2.imread(str(hopper)), cv2.COLOR_BGR2RGB),
        "cameraman": np.repeat(skimage.data.camera()[..., None], 3, axis=2),
    }


def cut_out(name: str, rgb: np.ndarray, seg: Segmenter) -> tuple[np.ndarray, np.ndarray]:
    h, w = rgb.shape[:2]
    prob = cv2.resize(seg(rgb), (w, h), interpolation=cv2.INTER_LINEAR)
    alpha = np.clip((prob - 0.5) * 4 + 0.5, 0, 1)  # a crisper edge than the raw probability
    if name == "astronaut":
        alpha[300:, 330:] = 0  # the helmet on the table is not part of the person
    if name == "cameraman":
        alpha[:, 380:] = 0  # the tripod's far leg and the background building
    ys, xs = np.nonzero(alpha > 0.5)
    y0, x0, x1 = ys.min(), xs.min(), xs.max() + 1
    return rgb[y0:, x0:x1], (alpha[y0:, x0:x1] * 255).astype(np.uint8)


def main() -> None:
    seg = Segmenter(sys.argv[1] if len(sys.argv) > 1 else model_path("general", "float"))
    OUT.mkdir(parents=True, exist_ok=True)
    for name, rgb in photos().items():
        person, alpha = cut_out(name, rgb, seg)
        cv2.imwrite(str(OUT / f"{name}.jpg"), cv2.cvtColor(person, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 88])
        cv2.imwrite(str(OUT / f"{name}_alpha.png"), alpha, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(name, person.shape)


if __name__ == "__main__":
    main()
