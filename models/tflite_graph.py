"""Graph surgery on .tflite flatbuffers, used by the model build.

Everything here works on the object API of the TFLite schema that ships with
ai-edge-litert (``schema_py_generated``), so the only dependencies are
ai-edge-litert, flatbuffers and numpy.

The passes turn MediaPipe's selfie-segmentation model into a plain float32
model made of builtin operators only:

* ``fold_fp16_weights``  float16 constant -> DEQUANTIZE  becomes a float32 constant
* ``builtin_transpose_conv``  MediaPipe's custom ``Convolution2DTransposeBias``
  becomes the builtin TRANSPOSE_CONV (which takes a bias since version 3)

and, for a graph that quantizes into a single XNNPACK partition:

* ``fuse_relu``  a RELU right after a convolution becomes its fused activation
* ``global_pool_to_mean``  a global AVERAGE_POOL_2D becomes MEAN over H, W
* ``expand_hard_swish``  HARD_SWISH(x) becomes x * relu6(x + 3) * 1/6

``prune`` drops tensors, buffers and operator codes nothing refers to any more,
``add_signature`` adds the ``serving_default`` signature (image -> mask) that
ai-edge-quantizer's calibration needs, and ``set_input_quantization`` pins the
quantization of an int8 input tensor.
"""
from __future__ import annotations

import collections
import struct

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

Op = schema.BuiltinOperator
_OP_NAMES = {v: k for k, v in vars(Op).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}

# MediaPipe's custom op and the layout of its options: padding, stride_w, stride_h
# as little-endian int32 (TfLitePadding: 1 = SAME, 2 = VALID).
MEDIAPIPE_TRANSPOSE_CONV = b"Convolution2DTransposeBias"
_TFLITE_PADDING_SAME = 1


# ----------------------------------------------------------------------------
# reading and writing


def load(data: bytes) -> schema.ModelT:
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    # Some writers keep large constants after the flatbuffer, addressed by
    # (offset, size); pull them in so that dump() writes a self-contained file.
    for buf in model.buffers:
        if buf.offset > 1:
            buf.data = np.frombuffer(data[buf.offset:buf.offset + buf.size], dtype=np.uint8)
            buf.offset = buf.size = 0
    return model


def dump(model: schema.ModelT) -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def op_name(model: schema.ModelT, op: schema.OperatorT) -> str:
    code = model.operatorCodes[op.opcodeIndex]
    if code.customCode:
        return code.customCode.decode()
    return _OP_NAMES.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")


def op_histogram(model: schema.ModelT) -> collections.Counter:
    """How often each operator occurs in the main subgraph."""
    return collections.Counter(op_name(model, op) for op in model.subgraphs[0].operators)


def tensor_type_name(type_code: int) -> str:
    return _TYPE_NAMES.get(type_code, "?")


# ----------------------------------------------------------------------------
# small builders


class _Editor:
    """Helpers bound to one model and its main subgraph."""

    def __init__(self, model: schema.ModelT):
        self.model = model
        self.graph = model.subgraphs[0]

    def code(self, op: schema.OperatorT) -> int:
        oc = self.model.operatorCodes[op.opcodeIndex]
        return -1 if oc.customCode else max(oc.builtinCode, oc.deprecatedBuiltinCode)

    def opcode(self, builtin: int, version: int = 1) -> int:
        for k, oc in enumerate(self.model.operatorCodes):
            if not oc.customCode and max(oc.builtinCode, oc.deprecatedBuiltinCode) == builtin:
                oc.version = max(oc.version, version)
                return k
        oc = schema.OperatorCodeT()
        oc.builtinCode = builtin
        oc.deprecatedBuiltinCode = min(builtin, 127)
        oc.version = version
        self.model.operatorCodes.append(oc)
        return len(self.model.operatorCodes) - 1

    def buffer(self, array: np.ndarray) -> int:
        buf = schema.BufferT()
        buf.data = np.frombuffer(np.ascontiguousarray(array).tobytes(), dtype=np.uint8)
        self.model.buffers.append(buf)
        return len(self.model.buffers) - 1

    def tensor(self, name: bytes, shape, type_code: int, data: np.ndarray | None = None) -> int:
        t = schema.TensorT()
        t.name = name
        t.shape = np.asarray(shape, dtype=np.int32)
        t.type = type_code
        t.buffer = self.buffer(data) if data is not None else 0
        self.graph.tensors.append(t)
        return len(self.graph.tensors) - 1

    def constant(self, name: bytes, values, dtype=np.float32) -> int:
        arr = np.asarray(values, dtype=dtype)
        type_code = {np.dtype(np.float32): schema.TensorType.FLOAT32,
                     np.dtype(np.int32): schema.TensorType.INT32}[arr.dtype]
        return self.tensor(name, arr.shape, type_code, arr)

    def like(self, src: int, name: bytes) -> int:
        s = self.graph.tensors[src]
        return self.tensor(name, s.shape, s.type)

    def operator(self, builtin: int, inputs, outputs, options_type=0, options=None, version=1) -> schema.OperatorT:
        op = schema.OperatorT()
        op.opcodeIndex = self.opcode(builtin, version)
        op.inputs = np.asarray(inputs, dtype=np.int32)
        op.outputs = np.asarray(outputs, dtype=np.int32)
        op.builtinOptionsType = options_type
        op.builtinOptions = options
        return op

    def consumers(self) -> dict[int, list]:
        uses: dict[int, list] = collections.defaultdict(list)
        for op in self.graph.operators:
            for t in op.inputs:
                if t >= 0:
                    uses[int(t)].append(op)
        return uses

    def producers(self) -> dict[int, schema.OperatorT]:
        return {int(t): op for op in self.graph.operators for t in op.outputs}


# ----------------------------------------------------------------------------
# passes (each edits the model in place and returns how many places it changed)


def fold_fp16_weights(model: schema.ModelT) -> int:
    ed, kept, folded = _Editor(model), [], 0
    for op in ed.graph.operators:
        if ed.code(op) == Op.DEQUANTIZE:
            src = ed.graph.tensors[int(op.inputs[0])]
            data = model.buffers[src.buffer].data
            if src.type == schema.TensorType.FLOAT16 and data is not None and len(data):
                weights = np.frombuffer(bytes(data), dtype=np.float16).astype(np.float32)
                ed.graph.tensors[int(op.outputs[0])].buffer = ed.buffer(weights)
                folded += 1
                continue
        kept.append(op)
    ed.graph.operators = kept
    return folded


def builtin_transpose_conv(model: schema.ModelT) -> int:
    ed, replaced = _Editor(model), 0
    for op in ed.graph.operators:
        oc = model.operatorCodes[op.opcodeIndex]
        if oc.customCode != MEDIAPIPE_TRANSPOSE_CONV:
            continue
        padding, stride_w, stride_h = struct.unpack("<3i", bytes(op.customOptions)[:12])
        x, weights, bias = (int(i) for i in op.inputs)
        out = ed.graph.tensors[int(op.outputs[0])]
        out_shape = ed.constant(out.name + b"/output_shape", np.asarray(out.shape), np.int32)
        opts = schema.TransposeConvOptionsT()
        opts.padding = schema.Padding.SAME if padding == _TFLITE_PADDING_SAME else schema.Padding.VALID
        opts.strideW, opts.strideH = stride_w, stride_h
        op.opcodeIndex = ed.opcode(Op.TRANSPOSE_CONV, version=3)  # v3: optional bias input
        op.inputs = np.asarray([out_shape, weights, x, bias], dtype=np.int32)
        op.builtinOptionsType = schema.BuiltinOptions.TransposeConvOptions
        op.builtinOptions = opts
        op.customOptions = None
        op.customOptionsFormat = 0
        replaced += 1
    return replaced


def fuse_relu(model: schema.ModelT) -> int:
    ed = _Editor(model)
    producers, consumers = ed.producers(), ed.consumers()
    graph_outputs = {int(t) for t in ed.graph.outputs}
    drop = set()
    for op in ed.graph.operators:
        if ed.code(op) != Op.RELU:
            continue
        src = int(op.inputs[0])
        prev = producers.get(src)
        if (prev is None or ed.code(prev) not in (Op.CONV_2D, Op.DEPTHWISE_CONV_2D)
                or prev.builtinOptions.fusedActivationFunction != schema.ActivationFunctionType.NONE
                or len(consumers[src]) != 1 or src in graph_outputs):
            continue
        prev.builtinOptions.fusedActivationFunction = schema.ActivationFunctionType.RELU
        prev.outputs = np.asarray(op.outputs, dtype=np.int32)
        drop.add(id(op))
    ed.graph.operators = [op for op in ed.graph.operators if id(op) not in drop]
    return len(drop)


def global_pool_to_mean(model: schema.ModelT) -> int:
    ed, replaced = _Editor(model), 0
    for op in ed.graph.operators:
        if ed.code(op) != Op.AVERAGE_POOL_2D:
            continue
        o = op.builtinOptions
        shape = list(ed.graph.tensors[int(op.inputs[0])].shape)
        if (o.filterHeight, o.filterWidth) != (shape[1], shape[2]) or o.fusedActivationFunction:
            continue
        axes = ed.constant(ed.graph.tensors[int(op.outputs[0])].name + b"/axes", [1, 2], np.int32)
        opts = schema.ReducerOptionsT()
        opts.keepDims = True
        op.opcodeIndex = ed.opcode(Op.MEAN)
        op.inputs = np.asarray([int(op.inputs[0]), axes], dtype=np.int32)
        op.builtinOptionsType = schema.BuiltinOptions.ReducerOptions
        op.builtinOptions = opts
        replaced += 1
    return replaced


def expand_hard_swish(model: schema.ModelT) -> int:
    """hard_swish(x) = x * relu6(x + 3) / 6, written as ADD(+RELU6), MUL, MUL:
    XNNPACK has no signed-int8 HARD_SWISH but does have int8 ADD and MUL."""
    ed, ops, expanded = _Editor(model), [], 0
    for op in ed.graph.operators:
        if ed.code(op) != Op.HARD_SWISH:
            ops.append(op)
            continue
        x, y = int(op.inputs[0]), int(op.outputs[0])
        name = ed.graph.tensors[y].name
        three = ed.constant(name + b"/three", [3.0])
        sixth = ed.constant(name + b"/one_sixth", [1.0 / 6.0])
        shifted, gate = ed.like(x, name + b"/relu6"), ed.like(x, name + b"/hard_sigmoid")
        add = schema.AddOptionsT()
        add.fusedActivationFunction = schema.ActivationFunctionType.RELU6
        ops.append(ed.operator(Op.ADD, [x, three], [shifted], schema.BuiltinOptions.AddOptions, add))
        ops.append(ed.operator(Op.MUL, [shifted, sixth], [gate], schema.BuiltinOptions.MulOptions, schema.MulOptionsT()))
        ops.append(ed.operator(Op.MUL, [x, gate], [y], schema.BuiltinOptions.MulOptions, schema.MulOptionsT()))
        expanded += 1
    ed.graph.operators = ops
    return expanded


def prune(model: schema.ModelT) -> None:
    """Drop unreferenced tensors, buffers and operator codes (renumbering the rest)."""
    graph = model.subgraphs[0]
    used = {int(i) for i in graph.inputs} | {int(i) for i in graph.outputs}
    for op in graph.operators:
        used |= {int(i) for i in op.inputs if i >= 0} | {int(i) for i in op.outputs}
    tmap = {old: new for new, old in enumerate(sorted(used))}
    graph.tensors = [graph.tensors[old] for old in sorted(used)]

    def renumber(idx):
        return np.asarray([tmap[int(i)] if i >= 0 else -1 for i in idx], dtype=np.int32)

    graph.inputs, graph.outputs = renumber(graph.inputs), renumber(graph.outputs)
    for op in graph.operators:
        op.inputs, op.outputs = renumber(op.inputs), renumber(op.outputs)
    for sig in model.signatureDefs or []:
        for tm in list(sig.inputs or []) + list(sig.outputs or []):
            tm.tensorIndex = tmap[tm.tensorIndex]

    metadata = model.metadata or []
    bufs = sorted({0} | {t.buffer for t in graph.tensors} | {md.buffer for md in metadata})
    bmap = {old: new for new, old in enumerate(bufs)}
    model.buffers = [model.buffers[old] for old in bufs]
    for t in graph.tensors:
        t.buffer = bmap[t.buffer]
    for md in metadata:
        md.buffer = bmap[md.buffer]

    codes = sorted({op.opcodeIndex for op in graph.operators})
    cmap = {old: new for new, old in enumerate(codes)}
    model.operatorCodes = [model.operatorCodes[old] for old in codes]
    for op in graph.operators:
        op.opcodeIndex = cmap[op.opcodeIndex]


def add_signature(model: schema.ModelT, key="serving_default", input_name="image", output_name="mask") -> None:
    if model.signatureDefs:
        return
    graph = model.subgraphs[0]
    sig = schema.SignatureDefT()
    sig.signatureKey = key
    sig.subgraphIndex = 0
    tin, tout = schema.TensorMapT(), schema.TensorMapT()
    tin.name, tin.tensorIndex = input_name, int(graph.inputs[0])
    tout.name, tout.tensorIndex = output_name, int(graph.outputs[0])
    sig.inputs, sig.outputs = [tin], [tout]
    model.signatureDefs = [sig]


def set_input_quantization(model: schema.ModelT, scale: float, zero_point: int) -> list[str]:
    """Pin the int8 input tensor's quantization; returns the ops that read the input.

    Only convolutions may read the input: they requantize with the input scale
    they read at Prepare() time, but their int32 bias is stored in units of
    input_scale * weight_scale, so each bias is re-expressed in the new units."""
    ed = _Editor(model)
    idx = int(ed.graph.inputs[0])
    t = ed.graph.tensors[idx]
    if t.type != schema.TensorType.INT8:
        raise ValueError(f"input is {tensor_type_name(t.type)}, not INT8")
    old_scale = float(t.quantization.scale[0])
    readers = [op for op in ed.graph.operators if idx in {int(i) for i in op.inputs}]
    for op in readers:
        if ed.code(op) not in (Op.CONV_2D, Op.DEPTHWISE_CONV_2D) or int(op.inputs[0]) != idx:
            raise ValueError(f"the input feeds {op_name(model, op)}, which cannot take a new input scale")
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            bias = ed.graph.tensors[int(op.inputs[2])]
            if bias.type != schema.TensorType.INT32:
                raise ValueError("expected an int32 bias")
            q = np.frombuffer(bytes(model.buffers[bias.buffer].data), dtype=np.int32)
            requantized = np.round(q.astype(np.float64) * (old_scale / scale)).astype(np.int32)
            model.buffers[bias.buffer].data = np.frombuffer(requantized.tobytes(), dtype=np.uint8)
            bias.quantization.scale = (np.asarray(bias.quantization.scale, np.float64) * (scale / old_scale)).astype(np.float32)
    q = t.quantization
    q.scale = np.asarray([scale], dtype=np.float32)
    q.zeroPoint = np.asarray([zero_point], dtype=np.int64)
    q.min = q.max = None
    return [op_name(model, op) for op in readers]


def int8_input(model: schema.ModelT, scale: float, zero_point: int) -> None:
    """Give a float-input model an int8 input: new int8 input -> DEQUANTIZE -> old input.

    With scale 1/255 and zero point -128 the caller feeds ``uint8 RGB ^ 0x80``
    and the graph itself turns it into [0, 1] floats."""
    ed = _Editor(model)
    old = int(ed.graph.inputs[0])
    src = ed.graph.tensors[old]
    if src.type != schema.TensorType.FLOAT32:
        raise ValueError("input is already quantized")
    new = ed.tensor(src.name + b"_int8", src.shape, schema.TensorType.INT8)
    q = schema.QuantizationParametersT()
    q.scale = np.asarray([scale], dtype=np.float32)
    q.zeroPoint = np.asarray([zero_point], dtype=np.int64)
    ed.graph.tensors[new].quantization = q
    ed.graph.operators.insert(0, ed.operator(Op.DEQUANTIZE, [new], [old], version=2))  # v2: int8 input
    ed.graph.inputs = np.asarray([new], dtype=np.int32)
    for sig in model.signatureDefs or []:
        for tm in sig.inputs or []:
            if tm.tensorIndex == old:
                tm.tensorIndex = new


def to_builtin_float(data: bytes, int8_friendly: bool = False) -> bytes:
    """The float32 builtin-ops rewrite of a MediaPipe selfie-segmentation model.

    ``int8_friendly`` additionally applies the rewrites that change results
    slightly (RELU fusion is exact; MEAN and the hard-swish expansion reorder
    float arithmetic) so that the quantized graph maps onto XNNPACK in one piece."""
    model = load(data)
    fold_fp16_weights(model)
    builtin_transpose_conv(model)
    if int8_friendly:
        fuse_relu(model)
        global_pool_to_mean(model)
        expand_hard_swish(model)
    prune(model)
    add_signature(model)
    return dump(model)
