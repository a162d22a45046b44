"""Re-create every model file in models/ from the mediapipe wheel.

    models/build.sh [--study]     # what `make models` runs: models/build.py in models/.build-venv

Steps: download the wheel (pip, by package name and version), check the sha256
of the two .tflite files in it, rewrite them to builtin float32 ops, quantize
(the candidates, evaluated side by side, and the shipped int8 variant), check
the results, and write models/quality.json and the quality table in
models/README.md. Deterministic: the same inputs give the same .tflite bytes.

Needs (models/build-requirements.txt): ai-edge-quantizer, ai-edge-litert,
numpy<2, opencv-python-headless, scikit-image, matplotlib.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")  # the quantizer's progress bars
HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from models import evalset, harness  # noqa: E402
from models import tflite_graph as tg  # noqa: E402

MEDIAPIPE = "mediapipe==0.10.21"
# The wheel is platform specific; the .tflite files in it are not (same bytes in
# 0.10.14 .. 0.10.21). Ask for one fixed wheel so every host downloads the same file.
WHEEL_PLATFORM = ("manylinux_2_28_x86_64", "311")
WHEEL = "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
WHEEL_SHA256 = "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3"
SOURCES = {
    "general": ("mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
                "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c"),
    "landscape": ("mediapipe/modules/selfie_segmentation/selfie_segmentation_landscape.tflite",
                  "a77d03f4659b9f6b6c1f5106947bf40e99d7655094b6527f214ea7d451106edd"),
}
FRAME_SIZE = {"general": (640, 480), "landscape": (640, 360)}
INPUT_SCALE, INPUT_ZERO_POINT = 1.0 / 255.0, -128   # int8 input == uint8 RGB ^ 0x80
CACHE = HERE / ".cache"
README = HERE / "README.md"
TABLE_BEGIN, TABLE_END = "<!-- quality-table:begin -->", "<!-- quality-table:end -->"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def log(*args) -> None:
    print("[models]", *args, flush=True)


# ----------------------------------------------------------------------------- source


def fetch_sources() -> dict[str, bytes]:
    CACHE.mkdir(exist_ok=True)
    wheel_path = CACHE / WHEEL
    if not wheel_path.exists():
        platform, pyver = WHEEL_PLATFORM
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--only-binary=:all:", "--platform", platform, "--python-version", pyver,
                        "--dest", str(CACHE), MEDIAPIPE], check=True)
    if sha256(wheel_path.read_bytes()) != WHEEL_SHA256:
        raise SystemExit(f"{wheel_path.name}: sha256 differs from {WHEEL_SHA256}")
    out = {}
    with zipfile.ZipFile(wheel_path) as wheel:
        for variant, (member, digest) in SOURCES.items():
            data = wheel.read(member)
            if sha256(data) != digest:
                raise SystemExit(f"{member}: sha256 {sha256(data)} != expected {digest}")
            out[variant] = data
        licence = wheel.read("mediapipe-0.10.21.dist-info/LICENSE")
    (HERE / "source").mkdir(exist_ok=True)
    for variant, data in out.items():
        (HERE / "source" / f"{variant}.tflite").write_bytes(data)
    (HERE / "source" / "LICENSE").write_bytes(licence)
    log("sources verified:", ", ".join(f"{v} {SOURCES[v][1][:12]}" for v in out))
    return out


# ----------------------------------------------------------------------------- quantization


def quantize(float_path: str, recipe_list, calibration=None) -> bytes:
    from ai_edge_quantizer import quantizer

    q = quantizer.Quantizer(float_path)
    q.load_quantization_recipe(recipe_list)
    result = q.calibrate(calibration, num_threads=1) if q.need_calibration else None
    return bytes(q.quantize(result, enable_progress_report=False).quantized_model)


# Ops are named by their output tensor (ai-edge-quantizer matches "name;" scopes).
MIN_INT8_WEIGHTS = 3000  # convolutions with fewer weights keep float32 weights


def _keep_float(regex: str) -> dict:
    return {"regex": regex, "operation": "*", "algorithm_key": "no_quantize"}


def small_convolutions(float_path: str, below: int = MIN_INT8_WEIGHTS) -> list[str]:
    """Output names of the convolutions with fewer than ``below`` weights: the
    stem, the depthwise and squeeze-excite convolutions and the decoder."""
    model = tg.load(pathlib.Path(float_path).read_bytes())
    graph = model.subgraphs[0]
    names = []
    for op in graph.operators:
        if tg.op_name(model, op) in ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV"):
            weights = graph.tensors[int(op.inputs[1])]
            if int(np.prod(weights.shape)) < below:
                names.append(graph.tensors[int(op.outputs[0])].name.decode())
    return names


def shipped_recipe(float_path: str):
    """int8 per-channel weights for the convolutions with >= MIN_INT8_WEIGHTS weights."""
    from ai_edge_quantizer import recipe

    small = "|".join(re.escape(n) for n in small_convolutions(float_path))
    return recipe.weight_only_wi8_afp32() + [_keep_float(f"^({small});$")]


def int8_summary(float_path: str) -> dict:
    model = tg.load(pathlib.Path(float_path).read_bytes())
    graph = model.subgraphs[0]
    sizes = [int(np.prod(graph.tensors[int(op.inputs[1])].shape)) for op in graph.operators
             if tg.op_name(model, op) in ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV")]
    big = [n for n in sizes if n >= MIN_INT8_WEIGHTS]
    return {"convolutions": len(sizes), "int8_convolutions": len(big),
            "int8_weight_share": round(sum(big) / sum(sizes), 3)}


def shipped_int8(float_path: str) -> bytes:
    """int8 weights for the big convolutions, float32 everywhere else, and an int8
    input (uint8 ^ 0x80, turned into [0, 1] floats by a DEQUANTIZE op)."""
    model = tg.load(quantize(float_path, shipped_recipe(float_path)))
    tg.int8_input(model, INPUT_SCALE, INPUT_ZERO_POINT)
    return tg.dump(model)


def candidate_recipes():
    """The variants weighed against the shipped one (general model), as (kind, recipe)."""
    from ai_edge_quantizer import recipe

    static = recipe.static_wi8_ai8()
    return {
        "static int8 (weights + activations)": ("static", static),
        "static int8, last TRANSPOSE_CONV + LOGISTIC float": ("static", static + [_keep_float("^(segment|activation_10);$")]),
        "int8 dynamic range": ("float", recipe.dynamic_wi8_afp32()),
        "int8 weights, all layers": ("float", recipe.weight_only_wi8_afp32()),
        "int8 weights, first and last conv float": ("float", recipe.weight_only_wi8_afp32() + [_keep_float("^(conv2d|segment);$")]),
    }


def static_int8(friendly_path: str, recipe_list, frames) -> bytes:
    probe = harness.Segmenter(friendly_path)
    calibration = {"serving_default": [{"image": probe.prepare(f)} for f in frames]}
    model = tg.load(quantize(friendly_path, recipe_list, calibration))
    tg.set_input_quantization(model, INPUT_SCALE, INPUT_ZERO_POINT)
    return tg.dump(model)


# ----------------------------------------------------------------------------- evaluation


def speed_ms(path, threads: int, frame: np.ndarray, runs: int = 60) -> float:
    seg = harness.Segmenter(path, threads=threads)
    x = seg.prepare(frame)
    for _ in range(5):
        seg.run(x)
    best = float("inf")
    for _ in range(runs):  # fastest run: the least disturbed by other load on the machine
        t = time.perf_counter()
        seg.run(x)
        best = min(best, time.perf_counter() - t)
    return round(best * 1000, 2)


def evaluate(path, reference: dict, ev: evalset.EvaluationSet, timing: bool = True) -> dict:
    seg = harness.Segmenter(path)
    comp = [harness.iou(seg(f.rgb), reference[f.name]) for f in ev.composites]
    hard = [harness.iou(seg(f.rgb), reference[f.name]) for f in ev.hard_composites]
    truth = [harness.iou(seg(f.rgb), harness_resize(f.truth, seg)) for f in ev.composites]
    real = {f.name: round(harness.iou(seg(f.rgb), reference[f.name]), 4) for f in ev.real}
    free = {f.name: round(harness.person_fraction(seg(f.rgb)), 4) for f in ev.person_free}
    partitions, whole = harness.delegate_partitions(str(path))
    out = {
        "bytes": os.path.getsize(path),
        "iou_vs_truth_mean": round(float(np.mean(truth)), 4),
        "iou_vs_float_mean": round(float(np.mean(comp)), 4),
        "iou_vs_float_min": round(float(np.min(comp)), 4),
        "worst_frame": ev.composites[int(np.argmin(comp))].name,
        "hard_iou_vs_float_mean": round(float(np.mean(hard)), 4),
        "hard_iou_vs_float_min": round(float(np.min(hard)), 4),
        "real_photos_iou_vs_float": real,
        "person_free_fraction": free,
        "xnnpack_partitions": partitions,
        "xnnpack_whole_graph": whole,
    }
    if timing:
        out["ms_1_thread"] = speed_ms(path, 1, ev.real[0].rgb)
        out["ms_2_threads"] = speed_ms(path, 2, ev.real[0].rgb)
    return out


QUALITY_BAR = {"mean": 0.97, "min": 0.90, "real": 0.97}


def check_quality_bar(r: dict, name: str) -> None:
    """Refuse to write a model card for an int8 file that misses the bar."""
    problems = []
    if r["iou_vs_float_mean"] < QUALITY_BAR["mean"]:
        problems.append(f"mean IoU {r['iou_vs_float_mean']}")
    if r["iou_vs_float_min"] < QUALITY_BAR["min"]:
        problems.append(f"worst IoU {r['iou_vs_float_min']} ({r['worst_frame']})")
    if min(r["real_photos_iou_vs_float"].values()) < QUALITY_BAR["real"]:
        problems.append(f"real photos {r['real_photos_iou_vs_float']}")
    if (r["xnnpack_partitions"], r["xnnpack_whole_graph"]) != (1, True):
        problems.append("not one whole-graph XNNPACK partition")
    if problems:
        raise SystemExit(f"{name} misses the quality bar: " + "; ".join(problems))


def noise_floor(float_path, ev: evalset.EvaluationSet) -> dict:
    """IoU of the float model with itself when each pixel gets +-2 levels of noise:
    how stable the reference is, i.e. the best any other variant can hope for."""
    seg = harness.Segmenter(float_path)
    rng = np.random.default_rng(0)
    ious = []
    for f in ev.composites:
        noisy = np.clip(f.rgb.astype(np.int16) + rng.integers(-2, 3, f.rgb.shape), 0, 255).astype(np.uint8)
        ious.append(harness.iou(seg(f.rgb), seg(noisy)))
    return {"mean": round(float(np.mean(ious)), 4), "min": round(float(np.min(ious)), 4),
            "worst_frame": ev.composites[int(np.argmin(ious))].name}


def harness_resize(mask: np.ndarray, seg: harness.Segmenter) -> np.ndarray:
    import cv2

    return cv2.resize(mask, (seg.width, seg.height), interpolation=cv2.INTER_AREA)


def check_float_rewrite(original: str, rewritten: str, ev: evalset.EvaluationSet) -> float:
    """max |diff| of the outputs; the original only runs with XNNPACK (custom op)."""
    a, b = harness.Segmenter(original), harness.Segmenter(rewritten)
    frames = [f.rgb for f in ev.real + ev.person_free + ev.composites[:10]]
    return max(float(np.abs(a(f) - b(f)).max()) for f in frames)


# ----------------------------------------------------------------------------- study

# Which part of the network can take int8 activations? Each row quantizes the
# activations of one stretch of ops only (op index range in the int8-friendly
# graph), everything else stays float. Run with --study.
STAGES = {
    "stem: 3x3 conv only": (0, 1),
    "stem: hard-swish": (1, 4),
    "block 1 (16 ch, squeeze-excite)": (4, 12),
    "blocks 2-3 (24 ch)": (12, 24),
    "blocks 4-5 (40 ch)": (24, 48),
    "blocks 6-7": (48, 78),
    "block 8 + decoder entry": (78, 98),
    "decoder stages 1-2": (98, 122),
    "decoder stage 3 + transpose conv + sigmoid": (122, 136),
}


def study(friendly: pathlib.Path, frames, reference, ev) -> dict:
    from ai_edge_quantizer import quantizer, recipe

    graph = tg.load(friendly.read_bytes()).subgraphs[0]
    names = [graph.tensors[int(op.outputs[0])].name.decode() for op in graph.operators]
    probe = harness.Segmenter(friendly)
    calibration = {"serving_default": [{"image": probe.prepare(f)} for f in frames]}
    q = quantizer.Quantizer(str(friendly))
    q.load_quantization_recipe(recipe.static_wi8_ai8())
    qsv = q.calibrate(calibration, num_threads=1)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, (a, b) in STAGES.items():
            floats = [re.escape(n) for k, n in enumerate(names) if not a <= k < b]
            q = quantizer.Quantizer(str(friendly))
            q.load_quantization_recipe(recipe.static_wi8_ai8() + [_keep_float("^(" + "|".join(floats) + ");$")])
            path = pathlib.Path(tmp) / "stage.tflite"
            path.write_bytes(bytes(q.quantize(qsv, enable_progress_report=False).quantized_model))
            r = evaluate(path, reference, ev, timing=False)
            rows[label] = {k: r[k] for k in ("iou_vs_float_mean", "iou_vs_float_min", "worst_frame")}
            log("study", label, rows[label])
    return rows


# ----------------------------------------------------------------------------- model card

STUDY_BEGIN, STUDY_END = "<!-- stage-study:begin -->", "<!-- stage-study:end -->"


def table(results: dict) -> str:
    rows = ["| file / variant | size | IoU vs float: mean (min) | hard backgrounds: mean (min) "
            "| real photos vs float (min) | IoU vs composite truth | XNNPACK partitions | ms 1 / 2 threads |",
            "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        rows.append(f"| {name} | {r['bytes'] / 1024:.0f} KB | "
                    f"{r['iou_vs_float_mean']:.3f} ({r['iou_vs_float_min']:.3f}) | "
                    f"{r['hard_iou_vs_float_mean']:.3f} ({r['hard_iou_vs_float_min']:.3f}) | "
                    f"{min(r['real_photos_iou_vs_float'].values()):.3f} | {r['iou_vs_truth_mean']:.3f} | "
                    f"{r['xnnpack_partitions']}{'' if r['xnnpack_whole_graph'] else ' (not whole graph)'} | "
                    f"{r['ms_1_thread']:.1f} / {r['ms_2_threads']:.1f} |")
    names = list(results["general_float.tflite"]["person_free_fraction"])
    rows += ["", "Person share (pixels > 0.5) on the person-free photos:", "",
             "| file / variant | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for name, r in results.items():
        rows.append(f"| {name} | " + " | ".join(f"{r['person_free_fraction'][n]:.3f}" for n in names) + " |")
    return "\n".join(rows)


def study_table(rows: dict) -> str:
    out = ["| int8 activations only in | IoU vs float: mean (min) | worst frame |", "|---|---|---|"]
    for label, r in rows.items():
        out.append(f"| {label} | {r['iou_vs_float_mean']:.3f} ({r['iou_vs_float_min']:.3f}) | {r['worst_frame']} |")
    return "\n".join(out)


def _replace_block(text: str, begin: str, end: str, body: str) -> str:
    return re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: f"{begin}\n{body}\n{end}", text, flags=re.S)


def write_card(results: dict, extra: dict) -> None:
    report = {"results": results, **extra}
    old = HERE / "quality.json"
    if "stage_study" not in report and old.exists():  # keep the last study when not re-run
        previous = json.loads(old.read_text())
        if "stage_study" in previous:
            report["stage_study"] = previous["stage_study"]
    old.write_text(json.dumps(report, indent=1) + "\n")
    text = README.read_text()
    text = _replace_block(text, TABLE_BEGIN, TABLE_END, table(results))
    if "stage_study" in report:
        text = _replace_block(text, STUDY_BEGIN, STUDY_END, study_table(report["stage_study"]))
    README.write_text(text)


# ----------------------------------------------------------------------------- main


def main(argv: list[str]) -> None:
    run_study = "--study" in argv
    sources = fetch_sources()
    work = pathlib.Path(tempfile.mkdtemp(prefix="blurcam-models-"))
    try:
        outputs, results = {}, {}
        extra: dict = {"float_rewrite_max_abs_diff": {}, "float_noise_floor": {}}
        general_float = harness.Segmenter(HERE / "source" / "general.tflite")  # cuts the people out
        for variant, data in sources.items():
            fpath = HERE / f"{variant}_float.tflite"
            fpath.write_bytes(tg.to_builtin_float(data))
            width, height = FRAME_SIZE[variant]
            ev = evalset.evaluation_set(general_float, width=width, height=height)
            diff = check_float_rewrite(str(HERE / "source" / f"{variant}.tflite"), str(fpath), ev)
            extra["float_rewrite_max_abs_diff"][variant] = diff
            if diff > 1e-5:
                raise SystemExit(f"{variant}: rewritten float model differs from the original by {diff}")
            qpath = HERE / f"{variant}_int8.tflite"
            qpath.write_bytes(shipped_int8(str(fpath)))
            extra.setdefault("int8_file", {})[variant] = int8_summary(str(fpath))
            outputs[variant] = (fpath, qpath)

            ref_seg = harness.Segmenter(fpath)
            reference = {f.name: ref_seg(f.rgb) for f in ev.composites + ev.hard_composites + ev.real}
            extra["float_noise_floor"][variant] = noise_floor(fpath, ev)
            for path in (fpath, qpath):
                results[path.name] = evaluate(path, reference, ev)
                log(path.name, results[path.name])
            check_quality_bar(results[qpath.name], qpath.name)

            if variant == "general":  # the variants the shipped one was chosen over
                friendly = work / "general_friendly.tflite"
                friendly.write_bytes(tg.to_builtin_float(data, int8_friendly=True))
                frames = evalset.calibration_frames(general_float, width=width, height=height)
                for name, (kind, rcp) in candidate_recipes().items():
                    out = work / "candidate.tflite"
                    if kind == "static":
                        out.write_bytes(static_int8(str(friendly), rcp, frames))
                    else:
                        out.write_bytes(quantize(str(fpath), rcp))
                    results[f"general: {name}"] = evaluate(out, reference, ev)
                    log(name, results[f"general: {name}"])
                if run_study:
                    extra["stage_study"] = study(friendly, frames, reference, ev)
        sums = "".join(f"{sha256(p.read_bytes())}  {p.name}\n" for pair in outputs.values() for p in pair)
        (HERE / "SHA256SUMS").write_text(sums)
        write_card(results, extra)
        log("wrote\n" + sums)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
