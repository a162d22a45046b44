"""Graph surgery used by the build, on small hand-made models."""
import numpy as np
import pytest

from models import harness
from models import tflite_graph as tg

S = tg.schema


def _quant(scale, zero_point, axis=0):
    q = S.QuantizationParametersT()
    q.scale = np.asarray(scale, np.float32)
    q.zeroPoint = np.asarray(zero_point, np.int64)
    q.quantizedDimension = axis
    return q


def tiny_int8_conv(input_scale: float, input_zero: int) -> bytes:
    """int8 input [1,4,4,3] -> 1x1 CONV_2D with per-channel int8 weights and an
    int32 bias (stored in input_scale * weight_scale units) -> int8 output."""
    rng = np.random.default_rng(3)
    model = S.ModelT()
    model.version = 3
    model.buffers = [S.BufferT()]
    graph = S.SubGraphT()
    graph.tensors, graph.operators = [], []
    model.subgraphs = [graph]
    model.operatorCodes = []
    ed = tg._Editor(model)
    w_scale = np.asarray([0.02, 0.001], np.float32)
    weights = rng.integers(-127, 128, (2, 1, 1, 3)).astype(np.int8)
    bias_real = np.asarray([0.3, -0.05], np.float32)
    bias_q = np.round(bias_real / (input_scale * w_scale)).astype(np.int32)
    x = ed.tensor(b"x", [1, 4, 4, 3], S.TensorType.INT8)
    w = ed.tensor(b"w", [2, 1, 1, 3], S.TensorType.INT8, weights)
    b = ed.tensor(b"b", [2], S.TensorType.INT32, bias_q)
    y = ed.tensor(b"y", [1, 4, 4, 2], S.TensorType.INT8)
    graph.tensors[x].quantization = _quant([input_scale], [input_zero])
    graph.tensors[w].quantization = _quant(w_scale, [0, 0])
    graph.tensors[b].quantization = _quant(input_scale * w_scale, [0, 0])
    graph.tensors[y].quantization = _quant([0.01], [0])
    opts = S.Conv2DOptionsT()
    opts.padding, opts.strideW, opts.strideH = S.Padding.VALID, 1, 1
    graph.operators.append(ed.operator(tg.Op.CONV_2D, [x, w, b], [y], S.BuiltinOptions.Conv2DOptions, opts, version=3))
    graph.inputs, graph.outputs = np.asarray([x], np.int32), np.asarray([y], np.int32)
    return tg.dump(model)


def run(path, x):
    it = harness.interpreter(path, xnnpack=False)
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"]).astype(np.int32)


def test_new_input_scale_keeps_the_convolution_result(tmp_path):
    # calibration saw values up to 0.5: pixels below 128 are representable either way
    pixels = np.random.default_rng(0).integers(0, 128, (1, 4, 4, 3)).astype(np.uint8)
    calibrated = tmp_path / "calibrated.tflite"
    calibrated.write_bytes(tiny_int8_conv(0.5 / 255, -128))
    before = run(calibrated, (pixels.astype(np.int16) * 2 - 128).astype(np.int8))

    model = tg.load(calibrated.read_bytes())
    assert tg.set_input_quantization(model, 1 / 255, -128) == ["CONV_2D"]
    pinned = tmp_path / "pinned.tflite"
    pinned.write_bytes(tg.dump(model))
    after = run(pinned, (pixels ^ np.uint8(0x80)).view(np.int8))
    assert np.abs(after - before).max() <= 1   # the bias moved with the scale


def test_new_input_scale_without_moving_the_bias_would_be_wrong(tmp_path):
    """The control: re-labelling the input scale alone shifts the output by the bias error."""
    model = tg.load(tiny_int8_conv(0.5 / 255, -128))
    graph = model.subgraphs[0]
    graph.tensors[int(graph.inputs[0])].quantization.scale = np.asarray([1 / 255], np.float32)
    naive = tmp_path / "naive.tflite"
    naive.write_bytes(tg.dump(model))
    fixed_model = tg.load(tiny_int8_conv(0.5 / 255, -128))
    tg.set_input_quantization(fixed_model, 1 / 255, -128)
    fixed = tmp_path / "fixed.tflite"
    fixed.write_bytes(tg.dump(fixed_model))
    zeros = np.full((1, 4, 4, 3), -128, np.int8)   # black: output is the bias alone
    np.testing.assert_array_equal(run(fixed, zeros)[..., 0], 30)      # 0.3 / 0.01
    assert abs(int(run(naive, zeros)[0, 0, 0, 0]) - 30) >= 10


def test_input_feeding_something_other_than_a_convolution_is_refused():
    model = tg.load(tiny_int8_conv(1 / 255, -128))
    model.subgraphs[0].operators[0].opcodeIndex = tg._Editor(model).opcode(tg.Op.ADD)
    with pytest.raises(ValueError, match="ADD"):
        tg.set_input_quantization(model, 1 / 255, -128)


def test_int8_input_front_turns_uint8_xor_0x80_into_unit_floats(models_dir, tmp_path):
    model = tg.load((models_dir / "general_float.tflite").read_bytes())
    tg.int8_input(model, 1 / 255, -128)
    assert tg.op_name(model, model.subgraphs[0].operators[0]) == "DEQUANTIZE"
    path = tmp_path / "front.tflite"
    path.write_bytes(tg.dump(model))
    a = harness.Segmenter(path)
    b = harness.Segmenter(models_dir / "general_float.tflite")
    frame = np.random.default_rng(1).integers(0, 256, (300, 400, 3)).astype(np.uint8)
    np.testing.assert_allclose(a(frame), b(frame), atol=1e-6)
