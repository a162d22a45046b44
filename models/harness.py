"""Run a segmentation .tflite the way the appliance does, and measure it.

Shared by the model build (models/build.py) and the tests (tests/models/).
Needs numpy, opencv and one of the two runtimes: ai-edge-litert or
tflite-runtime. No quantizer, no mediapipe.
"""
from __future__ import annotations

import os

import cv2
import numpy as np

RUNTIMES = ("ai_edge_litert", "tflite_runtime")


def interpreter(path: str, runtime: str = "ai_edge_litert", threads: int = 1, xnnpack: bool = True):
    """An allocated interpreter for ``path``.

    ``xnnpack=False`` asks for the builtin kernels only (no default delegate)."""
    if runtime == "ai_edge_litert":
        from ai_edge_litert import interpreter as mod
    elif runtime == "tflite_runtime":
        from tflite_runtime import interpreter as mod
    else:
        raise ValueError(runtime)
    kwargs = {"model_path": os.fspath(path), "num_threads": threads}
    if not xnnpack:
        kwargs["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = mod.Interpreter(**kwargs)
    it.allocate_tensors()
    return it


def execution_plan(it) -> list[str]:
    """Operator names of the execution plan after delegation; a node that a
    delegate took over shows up as 'DELEGATE' (one per delegate partition)."""
    return [d["op_name"] for d in it._get_ops_details()]  # noqa: SLF001 (no public API for this)


def delegate_partitions(path: str, runtime: str = "ai_edge_litert", threads: int = 1) -> tuple[int, bool]:
    """How many partitions the default (XNNPACK) delegate made, and whether the
    graph ran as one piece.

    A model runs entirely inside the delegate when there is exactly one
    DELEGATE node, it produces the graph outputs, and everything it reads that
    is not a constant is a graph input: then no operator is left for the
    builtin kernels, neither before nor after nor beside it."""
    it = interpreter(path, runtime=runtime, threads=threads)
    nodes = [d for d in it._get_ops_details() if d["op_name"] == "DELEGATE"]  # noqa: SLF001
    if len(nodes) != 1:
        return len(nodes), False
    from ai_edge_litert import schema_py_generated as schema

    with open(path, "rb") as f:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(f.read(), 0))
    graph = model.subgraphs[0]
    const = {i for i, t in enumerate(graph.tensors)
             if model.buffers[t.buffer].data is not None and len(model.buffers[t.buffer].data)}
    node = nodes[0]
    reads = {int(i) for i in node["inputs"]} - const
    whole = (reads == {int(i) for i in graph.inputs}
             and {int(i) for i in node["outputs"]} == {int(i) for i in graph.outputs})
    return 1, whole


class Segmenter:
    """Preprocess, invoke and dequantize, reading everything from the tensor details."""

    def __init__(self, path: str, **kwargs):
        self.it = interpreter(path, **kwargs)
        self.inp = self.it.get_input_details()[0]
        self.out = self.it.get_output_details()[0]
        _, self.height, self.width, _ = (int(v) for v in self.inp["shape"])

    @property
    def input_is_uint8_xor(self) -> bool:
        """True when the int8 input is simply ``uint8 RGB ^ 0x80``."""
        scale, zero = self.inp["quantization"]
        return self.inp["dtype"] == np.int8 and zero == -128 and abs(scale * 255.0 - 1.0) < 1e-6

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 RGB frame of any size -> input tensor (stretched, aspect not kept)."""
        small = cv2.resize(rgb, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
        if self.inp["dtype"] == np.float32:
            return (small.astype(np.float32) * np.float32(1.0 / 255.0))[None]
        if self.input_is_uint8_xor:
            return (small ^ np.uint8(0x80)).view(np.int8)[None]
        scale, zero = self.inp["quantization"]
        info = np.iinfo(self.inp["dtype"])
        q = np.round(small.astype(np.float32) / 255.0 / scale + zero)
        return np.clip(q, info.min, info.max).astype(self.inp["dtype"])[None]

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """Input tensor -> float32 probability map at model resolution (H, W)."""
        self.it.set_tensor(self.inp["index"], tensor)
        self.it.invoke()
        y = self.it.get_tensor(self.out["index"])[0, ..., 0]
        if self.out["dtype"] != np.float32:
            scale, zero = self.out["quantization"]
            y = (y.astype(np.float32) - zero) * np.float32(scale)
        return y

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        return self.run(self.prepare(rgb))


def iou(a: np.ndarray, b: np.ndarray, threshold: float = 0.5) -> float:
    """Intersection over union of the two masks' person regions (1.0 if both are empty)."""
    pa, pb = a > threshold, b > threshold
    union = np.count_nonzero(pa | pb)
    return 1.0 if union == 0 else np.count_nonzero(pa & pb) / union


def person_fraction(mask: np.ndarray, threshold: float = 0.5) -> float:
    return float(np.count_nonzero(mask > threshold)) / mask.size
