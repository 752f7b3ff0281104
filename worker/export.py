"""`mpinet export CHECKPOINT --format onnx|h5|safetensors --out FILE`: for other runtimes.

    --format onnx          the network as an ONNX graph (below)
    --format h5 --dtype float16|bfloat16   an inference-only checkpoint with 16-bit weights,
                           which load/eval/predict/serve read (computing in float32)
    --format safetensors   the weights by name, the book's shapes, no pickle

The network's plan (model/builders.py) maps one to one onto standard ONNX operators, in the
book's order: Conv, Relu/Sigmoid/Tanh, MaxPool, BatchNormalization, Flatten, Gemm; dropout
is the identity at inference and left out. Chapter 8's blocks become their sub-layers' nodes
and one Add (a residual block: body + shortcut) or Concat along channels (an Inception
block), global average pooling a GlobalAveragePool then Flatten. Weights keep the book's
shapes, which are ONNX's own (conv W (FN, C, FH, FW) = OIHW; affine W (in, out) with Gemm's
transB = 0). The input is (N, 1, 28, 28) float32 pixels in [0, 1], 1 = ink, the batch
dynamic; a network trained on standardised pixels has the Sub/Div folded in front. The
output is the scores ("logits"); the class names, data set and input convention are in the
model's metadata.

onnx and safetensors are an optional extra (`pip install "mpinet[onnx]"`): training
never needs them.
"""

import json
from pathlib import Path

import numpy as np

from mpinet.data import class_names
from mpinet.data.atomic import replacing
from mpinet.data.messages import written
from mpinet.model.blocks import BLOCK_KINDS, sub_plans
from mpinet.model.checkpoint import read, resolve

from .predict import CHECKPOINT_HELP, pixel_stats, trained_on

HELP = "export a checkpoint's network to ONNX, for onnxruntime and other runtimes"
OPSET = 17
BN_EPS = 1e-5  # model/layers.py BatchNormalization


def add_arguments(parser):
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help=CHECKPOINT_HELP)
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="onnx",
        help="onnx (a graph for onnxruntime and others), h5 (an inference-only "
        "mpinet checkpoint with 16-bit weights) or safetensors (the "
        "weights by name, for other ecosystems); default onnx",
    )
    parser.add_argument(
        "--dtype",
        choices=("float16", "bfloat16"),
        default="float16",
        help="--format h5: the weights' 16-bit type (default float16)",
    )
    parser.add_argument("--out", metavar="FILE", required=True, help="the file to write")


def run(args):
    ckpt = read(resolve(args.checkpoint))
    out = Path(args.out)
    with written(out, option="--out"), replacing(out) as tmp:  # never half a file at `out`
        what = WRITERS[args.format](ckpt, tmp, args)
    mb = out.stat().st_size / 1e6, ckpt.path.stat().st_size / 1e6
    sizes = f"{mb[0]:.2f} MB (the checkpoint {mb[1]:.2f})"
    print(f"wrote {out}: {ckpt.spec['name']} from {ckpt.path}, {what}; {sizes}")
    return 0


def write_onnx(ckpt, path, args):
    try:
        import onnx
    except ImportError:
        raise ValueError(
            "--format onnx: the onnx package is not installed; expected the "
            'optional extra; pip install "mpinet[onnx]"'
        ) from None
    model = to_onnx(ckpt)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return (
        f"{len(model.graph.node)} ONNX nodes (opset {OPSET}), input (N, 1, 28, 28) "
        f"float32, output scores"
    )


def write_h5(ckpt, path, args):
    """An inference-only checkpoint: 16-bit arrays, no optimizer state, the same meta that
    inference reads (config, pixel statistics, accuracy)."""
    from mpinet.model.checkpoint import network, save

    keep = (
        "step",
        "epoch",
        "config",
        "data_fingerprint",
        "pixel_mean",
        "pixel_std",
        "test_accuracy",
    )
    meta = {k: v for k, v in ckpt.meta.items() if k in keep}
    save(path, network(ckpt), None, meta, weights=args.dtype)
    return f"{args.dtype} weights (computed in float32 when loaded), no optimizer state"


def write_safetensors(ckpt, path, args):
    try:
        from safetensors.numpy import save_file
    except ImportError:
        raise ValueError(
            "--format safetensors: the safetensors package is not installed; "
            'expected the optional extra; pip install "mpinet[onnx]"'
        ) from None
    tensors = {**ckpt.params, **ckpt.state}  # the book's names and shapes
    classes = int(ckpt.spec.get("output_size", 10))
    dataset = trained_on(ckpt)
    save_file(
        {k: np.ascontiguousarray(v) for k, v in tensors.items()},
        str(path),
        metadata={
            "format": "mpinet",
            "model_spec": json.dumps(ckpt.spec, sort_keys=True),
            "dtype": ckpt.dtype,
            "dataset": dataset,
            "class_names": json.dumps(class_names(dataset, classes)),
            "layout": "conv W (FN, C, FH, FW); affine W (in, out), y = x @ W + b",
        },
    )
    return f"{len(tensors)} tensors by name"


WRITERS = {"onnx": write_onnx, "h5": write_h5, "safetensors": write_safetensors}
FORMATS = tuple(WRITERS)


def to_onnx(ckpt):
    """The checkpoint's network as an onnx.ModelProto."""
    from onnx import TensorProto, helper

    from mpinet.model import build

    if ckpt.dtype != "float32":
        raise ValueError(
            f"checkpoint {ckpt.path}: holds {ckpt.dtype} parameters; expected "
            f'float32 for ONNX export; train with model.dtype = "float32"'
        )
    net = build(ckpt.spec, dtype=ckpt.dtype, fuse=False)  # the book's plan: one ONNX op each
    graph = Graph(ckpt)
    x = "input"
    stats = pixel_stats(ckpt)
    if stats is not None:  # trained on standardised pixels: (x - mean) / std first
        x = graph.node("Sub", [x, graph.constant("pixel_mean", stats[0])])
        x = graph.node("Div", [x, graph.constant("pixel_std", stats[1])])
    if net.input_layout == "flat":
        x = graph.node("Flatten", [x], axis=1)
    for name, kind, a in net.plan:
        x = graph.layer(name, kind, a, x)
    classes = int(ckpt.spec.get("output_size", 10))
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])]
    outputs = [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", classes])]
    model = helper.make_model(
        helper.make_graph(
            graph.nodes, f"mpinet_{ckpt.spec['name']}", inputs, outputs, graph.initializers
        ),
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="mpinet",
    )
    dataset = trained_on(ckpt)
    helper.set_model_props(
        model,
        {
            "dataset": dataset,
            "class_names": json.dumps(class_names(dataset, classes)),
            "input": "pixels in [0, 1], 1 = ink (MNIST's convention), shape (N, 1, 28, 28)",
            "output": "scores (before softmax); the argmax is the label",
            "model_spec": json.dumps(ckpt.spec, sort_keys=True),
        },
    )
    return model


class Graph:
    """The nodes and initializers being built, with fresh names for intermediate tensors."""

    def __init__(self, ckpt):
        self.ckpt, self.nodes, self.initializers, self.count = ckpt, [], [], 0

    def node(self, op, inputs, **attributes):
        from onnx import helper

        self.count += 1
        out = f"{op.lower()}_{self.count}"
        self.nodes.append(helper.make_node(op, inputs, [out], **attributes))
        return out

    def constant(self, name, value):
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def tensor(self, name):
        """A parameter (or BatchNorm state) by its checkpoint name, as an initializer."""
        arrays = self.ckpt.state if name in self.ckpt.state else self.ckpt.params
        return self.constant(name, arrays[name])

    def layer(self, name, kind, a, x):
        """Append the ONNX node(s) of one plan entry -> the name of its output."""
        if kind in ("to_nhwc", "dropout"):  # ONNX maps are NCHW; dropout: identity here
            return x
        if kind in BLOCK_KINDS:
            return self.block(name, kind, a, x)
        if kind == "conv":
            pad = a["pad"]
            return self.node(
                "Conv",
                [x, self.tensor(f"{name}.W"), self.tensor(f"{name}.b")],
                strides=[a["stride"]] * 2,
                pads=[pad] * 4,
            )
        if kind == "affine":
            return self.node("Gemm", [x, self.tensor(f"{name}.W"), self.tensor(f"{name}.b")])
        if kind == "bn":
            return self.node(
                "BatchNormalization",
                [
                    x,
                    self.tensor(f"{name}.gamma"),
                    self.tensor(f"{name}.beta"),
                    self.tensor(f"{name}.running_mean"),
                    self.tensor(f"{name}.running_var"),
                ],
                epsilon=BN_EPS,
            )
        if kind == "pool":
            size, stride, pad = a["size"], a.get("stride", a["size"]), a.get("pad", 0)
            pads = {"pads": [pad] * 4} if pad else {}  # padding is -inf for MaxPool, as ours
            return self.node("MaxPool", [x], kernel_shape=[size] * 2, strides=[stride] * 2, **pads)
        if kind == "flatten":
            return self.node("Flatten", [x], axis=1)
        if kind == "gap":
            return self.node("Flatten", [self.node("GlobalAveragePool", [x])], axis=1)
        ops = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}
        if kind in ops:
            return self.node(ops[kind], [x])
        raise ValueError(
            f"checkpoint {self.ckpt.path}: layer {name} of kind {kind!r}; "
            f"expected one ONNX export knows; export is not available for it"
        )

    def block(self, name, kind, a, x):
        """A residual block: Add(body, shortcut); Inception: Concat of its branches (NCHW)."""
        outs = []
        for sub in sub_plans(kind, a):
            y = x  # an empty shortcut is the identity
            for sub_name, sub_kind, sub_a in sub:
                y = self.layer(f"{name}.{sub_name}", sub_kind, sub_a, y)
            outs.append(y)
        if kind == "residual":
            return self.node("Add", outs)
        return self.node("Concat", outs, axis=1)
