"""Person segmentation: the project's TFLite selfie model on ai-edge-litert (or tflite-runtime)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)
_ANNOUNCED: set[tuple[str, str, int]] = set()

MODEL_NAMES = ("general", "landscape")  # the model files
MODEL_CHOICES = ("auto", *MODEL_NAMES)  # what the `model` setting takes
PRECISIONS = ("int8", "float")
# Where model files live: an explicit override, the source tree, then the device install.
MODEL_DIRS = (
    os.environ.get("BLURCAM_MODEL_DIR", ""),
    str(Path(__file__).resolve().parent.parent / "models"),
    "/usr/share/blurcam/models",
)


class ModelError(RuntimeError):
    """A model file is missing, corrupt, or not the shape the pipeline needs."""


def model_for(choice: str, width: int, height: int) -> str:
    """The model file for the `model` setting and a frame size. "auto" takes the landscape model
    (256x144, made for 16:9) for frames wider than 3:2 and the general one (256x256) otherwise:
    on the evaluation set's 16:9 frames the landscape model finds the person better than the
    general one squeezed into a square (IoU vs truth 0.889 vs 0.845 mean, 0.820 vs 0.518 at the
    10th percentile) at about half the inference time; on 4:3 frames the general one is better
    (0.932 vs 0.911). See models/README.md."""
    if choice != "auto":
        return choice
    return "landscape" if width * 2 > height * 3 else "general"


def check_models(choice: str, precision: str) -> None:
    """Load every model file a setting can pick, so that a broken file is refused up front.
    (Unknown names are left to the settings schema, which says what is allowed.)"""
    if precision not in PRECISIONS:
        return
    for name in (MODEL_NAMES if choice == "auto" else (choice,) if choice in MODEL_NAMES else ()):
        load_segmenter(name, precision)


def model_path(name: str, precision: str) -> Path:
    if name not in MODEL_NAMES or precision not in PRECISIONS:
        raise ModelError(f"unknown model {name!r}/{precision!r}: model is one of {MODEL_NAMES}, "
                         f"precision one of {PRECISIONS}")
    filename = f"{name}_{precision}.tflite"
    for d in MODEL_DIRS:
        if d and (Path(d) / filename).is_file():
            return Path(d) / filename
    raise ModelError(f"model file {filename} not found in any of: "
                     + ", ".join(d for d in MODEL_DIRS if d))


def _interpreter_class():
    """ai-edge-litert first (current, ships XNNPACK), tflite-runtime as the fallback."""
    try:
        from ai_edge_litert.interpreter import Interpreter
        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter
        return Interpreter, "tflite-runtime"
    except ImportError:
        raise ModelError("no TFLite runtime installed: install ai-edge-litert or tflite-runtime") from None


@dataclass(frozen=True)
class _Quant:
    scale: float
    zero_point: int


class Segmenter:
    """Runs one model file: RGB image in, person probability (float32, model resolution) out."""

    def __init__(self, path: str | Path, threads: int = 1, runtime=None):
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"model file {path} does not exist")
        interpreter_cls, self.runtime = runtime or _interpreter_class()
        try:
            self._interp = interpreter_cls(model_path=str(path), num_threads=threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"model file {path} cannot be loaded: {str(exc).splitlines()[0]}") from None
        self.path = path
        self.threads = threads
        inputs, outputs = self._interp.get_input_details(), self._interp.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"model file {path}: expected 1 input and 1 output, "
                             f"got {len(inputs)} and {len(outputs)}")
        inp, out = inputs[0], outputs[0]
        shape_in, shape_out = tuple(inp["shape"]), tuple(out["shape"])
        if (len(shape_in) != 4 or shape_in[0] != 1 or shape_in[3] != 3
                or shape_out != (1, shape_in[1], shape_in[2], 1)):
            raise ModelError(f"model file {path}: expected input [1,H,W,3] and output [1,H,W,1], "
                             f"got {list(shape_in)} and {list(shape_out)}")
        if inp["dtype"] not in (np.float32, np.int8, np.uint8) or out["dtype"] not in (np.float32, np.int8, np.uint8):
            raise ModelError(f"model file {path}: unsupported tensor types {inp['dtype']}/{out['dtype']}")
        self.height, self.width = int(shape_in[1]), int(shape_in[2])
        self._in_index, self._out_index = inp["index"], out["index"]
        self._in_dtype = inp["dtype"]
        self._in_quant = _Quant(*inp["quantization"])
        self._out_quant = _Quant(*out["quantization"]) if out["dtype"] != np.float32 else None
        # int8 models built with input scale 1/255 and zero point -128 take `uint8 ^ 0x80` as is.
        self._xor_input = (self._in_dtype == np.int8 and self._in_quant.zero_point == -128
                           and abs(self._in_quant.scale * 255 - 1) < 1e-4)
        # Pipelines load their own copy (bench makes several): say it once per model and runtime.
        announce = (path.name, self.runtime, threads) not in _ANNOUNCED
        _ANNOUNCED.add((path.name, self.runtime, threads))
        log.log(logging.INFO if announce else logging.DEBUG,
                "model %s loaded on %s (%dx%d, %s input, %d thread(s))",
                path.name, self.runtime, self.width, self.height, np.dtype(self._in_dtype).name, threads)

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) the model wants."""
        return self.width, self.height

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        if rgb.shape[:2] != (self.height, self.width):
            rgb = model_input(rgb, self.input_size)
        if self._xor_input:
            return np.bitwise_xor(rgb, 0x80).view(np.int8)[None]
        x = rgb.astype(np.float32) * (1.0 / 255.0)
        if self._in_dtype == np.float32:
            return x[None]
        q = np.round(x / self._in_quant.scale + self._in_quant.zero_point)
        info = np.iinfo(self._in_dtype)
        return np.clip(q, info.min, info.max).astype(self._in_dtype)[None]

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        self._interp.set_tensor(self._in_index, tensor)
        self._interp.invoke()
        y = self._interp.get_tensor(self._out_index)[0, :, :, 0]
        if self._out_quant is not None:
            y = (y.astype(np.float32) - self._out_quant.zero_point) * self._out_quant.scale
        return y

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """Person probability in [0, 1], shape (model height, model width)."""
        return self.infer(self.preprocess(rgb))


def model_input(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An RGB image as the model wants it: stretched to `size` (aspect not kept, as MediaPipe
    feeds these models; letterboxing 16:9 into the square model loses the person at the bottom
    edge), averaging the pixels each model pixel covers. MediaPipe samples bilinearly instead,
    which scores 0.01 higher on clean frames but lets a camera's noise through unaveraged: at
    720p the mask's edge then flickers three to five times as much (models/README.md)."""
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def load_segmenter(name: str, precision: str, threads: int = 1) -> Segmenter:
    return Segmenter(model_path(name, precision), threads=threads)
