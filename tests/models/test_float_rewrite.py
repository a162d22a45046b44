"""The float rewrite (fp16 weights folded, custom transpose conv -> builtin)
computes what MediaPipe's original computes.

The original only runs where XNNPACK implements its custom op, so the exact
comparison is made with ai-edge-litert + XNNPACK for both files. On the builtin
kernels (which cannot run the original at all) the rewrite differs only by the
kernels' own float rounding."""
import numpy as np
import pytest

from models import harness
from tests.support import capabilities


def frames(ev):
    return [f.rgb for f in ev.real + ev.person_free + ev.composites[:12]]


@pytest.mark.parametrize("variant", ["general", "landscape"])
def test_rewritten_float_model_matches_the_mediapipe_original(models_dir, general_eval, variant):
    original = harness.Segmenter(models_dir / "source" / f"{variant}.tflite")
    rewritten = harness.Segmenter(models_dir / f"{variant}_float.tflite")
    worst = max(float(np.abs(original(f) - rewritten(f)).max()) for f in frames(general_eval))
    assert worst <= 1e-5


@pytest.mark.parametrize("runtime", harness.RUNTIMES)
def test_rewritten_float_model_on_builtin_kernels_differs_only_by_rounding(models_dir, general_eval, runtime):
    capabilities.tflite_runtime(runtime)
    original = harness.Segmenter(models_dir / "source" / "general.tflite")
    builtin = harness.Segmenter(models_dir / "general_float.tflite", runtime=runtime, xnnpack=False)
    worst = max(float(np.abs(original(f) - builtin(f)).max()) for f in frames(general_eval))
    assert worst < 1e-3


def test_original_cannot_run_without_xnnpack(models_dir):
    with pytest.raises(RuntimeError, match="Convolution2DTransposeBias"):
        harness.Segmenter(models_dir / "source" / "general.tflite", xnnpack=False)
