"""The models run inside XNNPACK in one piece: one delegate partition, no
operator left over for the (slow, single-threaded) builtin kernels.

Checked on the interpreter's execution plan: after delegation the plan holds one
DELEGATE node per partition; the graph ran whole when the only DELEGATE node
reads nothing but the graph input (and constants) and writes the graph output."""
import numpy as np
import pytest

from models import harness
from models import tflite_graph as tg
from tests.support import capabilities

SHIPPED = ("general_float", "general_int8", "landscape_float", "landscape_int8")


@pytest.mark.parametrize("name", SHIPPED)
def test_model_runs_whole_as_one_xnnpack_partition_on_ai_edge_litert(models_dir, name):
    assert harness.delegate_partitions(str(models_dir / f"{name}.tflite"), "ai_edge_litert") == (1, True)


@pytest.mark.parametrize("name", ["general_float", "landscape_float"])
def test_float_model_runs_whole_as_one_xnnpack_partition_on_tflite_runtime(models_dir, name):
    capabilities.tflite_runtime()
    assert harness.delegate_partitions(str(models_dir / f"{name}.tflite"), "tflite_runtime") == (1, True)


@pytest.mark.parametrize("name", ["general_int8", "landscape_int8"])
def test_int8_model_on_tflite_runtime_leaves_only_the_input_dequantize_outside(models_dir, name):
    """tflite-runtime 2.14's XNNPACK does not take an int8 -> float DEQUANTIZE of
    a graph input; that one op (256x256x3 values) runs before the single partition."""
    capabilities.tflite_runtime()
    path = str(models_dir / f"{name}.tflite")
    assert harness.delegate_partitions(path, "tflite_runtime") == (1, False)
    it = harness.interpreter(path, runtime="tflite_runtime")
    plan = it._get_ops_details()
    (node,) = [d for d in plan if d["op_name"] == "DELEGATE"]
    graph_input = it.get_input_details()[0]["index"]
    (first,) = [d for d in plan if graph_input in d["inputs"]]
    assert first["op_name"] == "DEQUANTIZE"
    assert set(first["outputs"]) <= set(node["inputs"])


def _with_sign_op(path, after: int) -> bytes:
    """The model with a SIGN op (which XNNPACK does not implement) spliced in
    after operator ``after`` (-1: right on the input)."""
    model = tg.load(open(path, "rb").read())
    ed = tg._Editor(model)
    g = ed.graph
    x = int(g.inputs[0]) if after < 0 else int(g.operators[after].outputs[0])
    y = ed.like(x, b"probe")
    for op in g.operators[after + 1:]:
        op.inputs = np.asarray([y if int(i) == x else int(i) for i in op.inputs], dtype=np.int32)
    g.operators.insert(after + 1, ed.operator(tg.Op.SIGN, [x], [y]))
    return tg.dump(model)


@pytest.mark.parametrize("after, expected", [(40, (2, False)), (-1, (1, False))],
                         ids=["op-in-the-middle-splits", "op-before-the-partition"])
def test_partition_check_catches_an_operator_xnnpack_cannot_run(models_dir, tmp_path, after, expected):
    probe = tmp_path / "probe.tflite"
    probe.write_bytes(_with_sign_op(models_dir / "general_float.tflite", after))
    assert harness.delegate_partitions(str(probe), "ai_edge_litert") == expected


def test_partition_check_sees_no_partition_without_the_delegate(models_dir):
    it = harness.interpreter(models_dir / "general_int8.tflite", xnnpack=False)
    assert "DELEGATE" not in harness.execution_plan(it)
