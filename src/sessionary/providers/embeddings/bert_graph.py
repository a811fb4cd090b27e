"""The BERT encoder's layers as an ONNX graph, built from a checkpoint's weights in memory.

No ONNX file ships or is downloaded: the graph is a dozen node kinds written out here, its
initializers the safetensors tensors (linear weights transposed to (in, out), query, key and
value joined into one product). Inputs: token ids (batch, length), their positions (length)
and the attention bias (batch, 1, 1, length: 0 for a token, a large negative number for
padding). Output: the last layer's hidden states (batch, length, hidden); pooling is the
caller's. Standard operators only (opset 20: LayerNormalization, exact-erf Gelu), which ONNX
Runtime's optimizer fuses (bias + GELU, residual + layer norm) when the session loads.

The weights stay out of the serialized graph: each is declared there as external data and
handed to ONNX Runtime as the NumPy array itself (`BertGraph.weights`, for
`SessionOptions.add_external_initializers`). Serialized with the graph, they were copied twice
more on the way in (the protobuf, then its bytes): a process loading only this model peaked
at 650 MB for 90 MB of weights, and peaks at 340 MB this way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from onnx import NodeProto, TensorProto

Matrix = NDArray[np.float32]

OPSET = 20  # the first with Gelu
IR_VERSION = 10  # what ONNX Runtime 1.20 and later read


# Constants up to this many elements (shapes, indices, the attention scale) stay in the graph:
# shape inference reads them while the session loads, before external data is attached.
INLINE_ELEMENTS = 16


@dataclass(frozen=True)
class BertGraph:
    model: bytes  # the serialized graph, without its weights
    weights: dict[str, Matrix]  # its external initializers by name, C-contiguous


@dataclass(frozen=True)
class BertShape:
    hidden: int
    heads: int
    layers: int
    eps: float


class _Builder:
    """Nodes and initializers in order, each node's output named after its position; large
    initializers declared external, their arrays kept in `weights`."""

    def __init__(self) -> None:
        self.nodes: list[NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.weights: dict[str, Matrix] = {}

    def const(self, name: str, value: NDArray[Any] | np.generic) -> str:
        from onnx import TensorProto, helper, numpy_helper

        array = np.asarray(value)  # 0-d stays 0-d (ascontiguousarray would make it 1-d)
        if array.size <= INLINE_ELEMENTS:
            self.initializers.append(numpy_helper.from_array(array, name))
            return name
        declared = TensorProto(
            name=name,
            data_type=helper.np_dtype_to_tensor_dtype(array.dtype),
            dims=array.shape,
            data_location=TensorProto.EXTERNAL,
        )
        declared.external_data.add(key="location", value="memory")
        self.initializers.append(declared)
        self.weights[name] = np.ascontiguousarray(array)
        return name

    def op(self, kind: str, *inputs: str, **attributes: Any) -> str:
        from onnx import helper

        out = f"n{len(self.nodes)}"
        self.nodes.append(helper.make_node(kind, list(inputs), [out], **attributes))
        return out


def bert_graph(w: dict[str, Matrix], shape: BertShape) -> BertGraph:
    """The model: embeddings, layer norm, then `shape.layers` encoder layers."""
    from onnx import TensorProto, helper

    b = _Builder()
    size = shape.hidden // shape.heads

    def linear(x: str, name: str, weight: Matrix, bias: Matrix) -> str:
        product = b.op("MatMul", x, b.const(name, np.ascontiguousarray(weight.T)))
        return b.op("Add", product, b.const(name + ".bias", bias))

    def norm(x: str, name: str, weight: Matrix, bias: Matrix) -> str:
        return b.op(
            "LayerNormalization",
            x,
            b.const(name, weight),
            b.const(name + ".bias", bias),
            axis=-1,
            epsilon=shape.eps,
        )

    def pair(prefix: str) -> tuple[Matrix, Matrix]:
        return w[prefix + ".weight"], w[prefix + ".bias"]

    heads_shape = b.const("heads_shape", np.array([0, 0, 3, shape.heads, size], np.int64))
    hidden_shape = b.const("hidden_shape", np.array([0, 0, shape.hidden], np.int64))
    scale = b.const("scale", np.float32(1 / math.sqrt(size)))
    picks = [b.const(f"pick{i}", np.array(i, np.int64)) for i in range(3)]

    words = b.op("Gather", b.const("words", w["embeddings.word_embeddings.weight"]), "ids")
    places = b.op(
        "Gather", b.const("places", w["embeddings.position_embeddings.weight"]), "positions"
    )
    token_type = b.const("token_type", w["embeddings.token_type_embeddings.weight"][0])
    x = b.op("Add", b.op("Add", words, places), token_type)
    x = norm(x, "norm0", *pair("embeddings.LayerNorm"))
    for i in range(shape.layers):
        p = f"encoder.layer.{i}."
        a = p + "attention."
        qkv_weight = np.concatenate([w[f"{a}self.{n}.weight"] for n in ("query", "key", "value")])
        qkv_bias = np.concatenate([w[f"{a}self.{n}.bias"] for n in ("query", "key", "value")])
        qkv = linear(x, f"{p}qkv", qkv_weight, qkv_bias)
        # (batch, length, 3, heads, size) → (3, batch, heads, length, size)
        qkv = b.op("Transpose", b.op("Reshape", qkv, heads_shape), perm=[2, 0, 3, 1, 4])
        q, k, v = (b.op("Gather", qkv, pick, axis=0) for pick in picks)
        scores = b.op("MatMul", q, b.op("Transpose", k, perm=[0, 1, 3, 2]))
        scores = b.op("Softmax", b.op("Add", b.op("Mul", scores, scale), "bias"), axis=-1)
        context = b.op("Transpose", b.op("MatMul", scores, v), perm=[0, 2, 1, 3])
        context = b.op("Reshape", context, hidden_shape)
        attended = linear(context, f"{a}out", *pair(a + "output.dense"))
        x = norm(b.op("Add", attended, x), f"{a}norm", *pair(a + "output.LayerNorm"))
        up = b.op("Gelu", linear(x, f"{p}up", *pair(p + "intermediate.dense")))
        down = linear(up, f"{p}down", *pair(p + "output.dense"))
        x = norm(b.op("Add", down, x), f"{p}norm", *pair(p + "output.LayerNorm"))
    b.nodes.append(helper.make_node("Identity", [x], ["hidden"]))
    graph = helper.make_graph(
        b.nodes,
        "bert",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "length"]),
            helper.make_tensor_value_info("positions", TensorProto.INT64, ["length"]),
            helper.make_tensor_value_info("bias", TensorProto.FLOAT, ["batch", 1, 1, "length"]),
        ],
        [
            helper.make_tensor_value_info(
                "hidden", TensorProto.FLOAT, ["batch", "length", shape.hidden]
            )
        ],
        b.initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
    )
    return BertGraph(model.SerializeToString(), b.weights)
