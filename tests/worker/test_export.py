"""`mpinet export CKPT --format onnx`: every network the project builds, loaded by
onnxruntime, gives mpinet's scores on real MNIST test images."""

import json

import h5py
import numpy as np
import pytest
from support import mpinet_command, run_job

from mpinet.data import TrainBatches
from mpinet.model import build
from mpinet.model.builders import PLANS
from mpinet.model.checkpoint import save
from mpinet.model.optimizers import create
from mpinet.worker.config import load_config, model_spec, to_toml

onnx = pytest.importorskip("onnx", reason="ONNX TESTS SKIPPED: pip install '.[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="ONNX TESTS SKIPPED: pip install '.[onnx]'")

# Every net of the registry (a new one without an export fails here), and the layers each
# option adds: BatchNorm, dropout (the identity at inference), other activations.
VARIANTS = {
    "mlp": [
        ["model.hidden=[32, 16]", "model.batchnorm=true", "model.dropout=0.2"],
        ["model.hidden=[24]", "model.activation='sigmoid'"],
        ["model.hidden=[24]", "model.activation='tanh'", "data.normalize='standard'"],
    ],
    "simple_cnn": [
        ["model.filters=6", "model.hidden=20"],
        [
            "model.filters=4",
            "model.filter_size=3",
            "model.pad=1",
            "model.stride=2",
            "model.batchnorm=true",
        ],
    ],
    "deep_cnn": [["model.filters=[4, 4, 6, 6, 8, 8]", "model.hidden=16"]],
    # chapter 8: blocks (Add, Concat), GlobalAveragePool, MaxPool with pads; BatchNorm is
    # their default, so the smaller variants leave it out (and fuse conv - relu - pool).
    "vgg": [[], ["model.filters=[4, 6]", "model.convs=1", "model.batchnorm=false"]],
    "googlenet": [
        [],
        [
            "model.stem=6",
            "model.inception=[[4, 4, 6, 2, 4, 4], [4, 4, 4, 2, 4, 2]]",
            "model.pool_after=[1, 2]",
            "model.double_3x3=true",
            "model.batchnorm=false",
        ],
    ],
    "resnet": [[], ["model.channels=[4, 8]", "model.blocks=[2, 1]", "model.batchnorm=false"]],
}
CHAPTER8_OPS = {"vgg": set(), "googlenet": {"Concat", "GlobalAveragePool"}}
CHAPTER8_OPS["resnet"] = {"Add", "GlobalAveragePool"}
CASES = [(name, settings) for name in sorted(PLANS) for settings in VARIANTS.get(name, [[]])]


def trained_checkpoint(mnist_h5, out, name, settings, steps=3):
    """A few real training steps (BatchNorm statistics move), saved as the loop saves."""
    cfg = load_config(None, [f"model.name='{name}'", f"data.path='{mnist_h5}'", *settings])
    shape = "flat" if name == "mlp" else "image"
    batches = TrainBatches(
        mnist_h5,
        global_batch=50,
        rank=0,
        world_size=1,
        seed=0,
        shape=shape,
        normalize=cfg.data.normalize,
        prefetch=False,
    )
    net, opt = build(model_spec(cfg), seed=0), create("adam", lr=0.01)
    for _, (x, t) in zip(range(steps), batches.epoch(0), strict=False):
        net.loss(x, t)
        net.backward()
        opt.update(net.buffer.data, net.buffer.grad)
    meta = {"step": steps, "config": to_toml(cfg)}
    if batches.stats is not None:
        meta.update(pixel_mean=batches.stats[0], pixel_std=batches.stats[1])
    return save(out, net, opt, meta), net, batches.stats


@pytest.mark.parametrize("name,settings", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_every_network_exports_to_onnx_with_the_same_scores(mnist_h5, tmp_path, name, settings):
    ckpt, net, stats = trained_checkpoint(mnist_h5, tmp_path / "ckpt-00000003.h5", name, settings)
    out = tmp_path / "model.onnx"
    job = run_job(
        [*mpinet_command(), "export", str(ckpt), "--format", "onnx", "--out", str(out)], timeout=60
    )
    assert job.returncode == 0, job.output
    assert job.stdout.startswith(f"wrote {out}: {name} from {ckpt}")
    model = onnx.load(out)
    onnx.checker.check_model(model)
    ops = {node.op_type for node in model.graph.node}
    assert "Dropout" not in ops and ("BatchNormalization" in ops) == net.spec["batchnorm"]
    assert CHAPTER8_OPS.get(name, set()) <= ops
    if name == "googlenet":  # the pool branch: 3x3, stride 1, padded by 1
        pools = [n for n in model.graph.node if n.op_type == "MaxPool"]
        assert any(a.name == "pads" and list(a.ints) == [1] * 4 for n in pools for a in n.attribute)
    with h5py.File(mnist_h5, "r") as f:
        pixels = f["test/images"][:200].astype(np.float32) / 255  # what a user feeds ONNX
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    scores = session.run(None, {"input": pixels.reshape(-1, 1, 28, 28)})[0]
    x = pixels if stats is None else (pixels - stats[0]) / stats[1]  # mpinet's own input
    x = x.reshape(-1, 784) if name == "mlp" else x.reshape(-1, 1, 28, 28)
    # The contract for float32 logits of magnitude ~10 (measured: ~1e-6).
    assert np.abs(scores - net.predict(x.astype(np.float32))).max() <= 1e-4
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["class_names"]) == [str(d) for d in range(10)]
    assert props["dataset"] == "mnist" and "1 = ink" in props["input"]


def test_fashion_class_names_are_in_the_metadata(fashion_checkpoint, tmp_path):
    out = tmp_path / "fashion.onnx"
    job = run_job(
        [*mpinet_command(), "export", str(fashion_checkpoint), "--out", str(out)], timeout=60
    )
    assert job.returncode == 0, job.output
    props = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert props["dataset"] == "fashion-mnist"
    assert json.loads(props["class_names"])[9] == "Ankle boot"


def test_a_bad_checkpoint_is_one_line_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_text("not a checkpoint")
    out = tmp_path / "model.onnx"
    job = run_job([*mpinet_command(), "export", str(bad), "--out", str(out)], timeout=60)
    assert job.returncode == 2 and "Traceback" not in job.stderr
    assert job.stderr.startswith(f"mpinet export: error: checkpoint {bad}: ")
    assert not out.exists()


@pytest.mark.parametrize("dtype,bits", [("float16", 11), ("bfloat16", 8)])
def test_16_bit_checkpoints_load_everywhere_and_keep_the_accuracy(
    checkpoint, mnist_h5, tmp_path, dtype, bits
):
    """Weights rounded to `bits` significant bits: a label may change only where the two top
    logits lie within the bound of that rounding (tests/numerics.py)."""
    from numerics import affine_relu_logit_bound, ambiguous_samples

    from mpinet.model import load

    small = tmp_path / f"small-{dtype}.h5"
    job = run_job(
        [
            *mpinet_command(),
            "export",
            str(checkpoint),
            "--format",
            "h5",
            "--dtype",
            dtype,
            "--out",
            str(small),
        ],
        timeout=60,
    )
    assert job.returncode == 0, job.output
    assert small.stat().st_size < 0.4 * checkpoint.stat().st_size  # 16 of 32 bits, no Adam
    with h5py.File(small, "r") as f:
        assert f.attrs["weights"] == dtype and "optimizer" not in f
    full, half = load(checkpoint), load(small)
    assert half.dtype == np.float32  # computed in float32
    with h5py.File(mnist_h5, "r") as f:
        x = f["test/images"][:].reshape(-1, 784).astype(np.float32) / 255
        t = f["test/labels"][:]
    layers = [
        (
            full.params[f"affine{i}.W"].astype(np.float64),
            full.params[f"affine{i}.b"].astype(np.float64),
        )
        for i in (1, 2)
    ]
    bound = affine_relu_logit_bound(layers, x, np.float32, rounding=2.0**-bits)
    flips = ambiguous_samples(full.predict(x).astype(np.float64), bound)
    moved = abs(int((half.classify(x) == t).sum()) - int((full.classify(x) == t).sum()))
    assert moved <= flips, (moved, flips)
    report = run_job([*mpinet_command(), "eval", str(small), "--json"], timeout=60)
    assert report.returncode == 0, report.output
    assert abs(json.loads(report.stdout)["accuracy"] * 10000 - (half.classify(x) == t).sum()) < 1


def test_a_16_bit_checkpoint_cannot_resume_training(checkpoint, mnist_h5, tmp_path):
    small = tmp_path / "small.h5"
    assert (
        run_job(
            [*mpinet_command(), "export", str(checkpoint), "--format", "h5", "--out", str(small)],
            timeout=60,
        ).returncode
        == 0
    )
    job = run_job(
        [
            *mpinet_command(),
            "train",
            "--data",
            str(mnist_h5),
            "--run-dir",
            str(tmp_path / "run"),
            "--resume",
            str(small),
        ],
        timeout=60,
    )
    assert job.returncode == 2 and "holds no optimizer state" in job.stderr, job.stderr
    assert not (tmp_path / "run").exists()


def test_safetensors_hold_the_weights_by_name_in_the_books_shapes(checkpoint, tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import load_file

    from mpinet.model.checkpoint import read

    out = tmp_path / "model.safetensors"
    job = run_job(
        [
            *mpinet_command(),
            "export",
            str(checkpoint),
            "--format",
            "safetensors",
            "--out",
            str(out),
        ],
        timeout=60,
    )
    assert job.returncode == 0, job.output
    tensors, ckpt = load_file(str(out)), read(checkpoint)
    assert sorted(tensors) == sorted(ckpt.params)  # an mlp without BatchNorm: no state
    assert all(np.array_equal(tensors[k], ckpt.params[k]) for k in ckpt.params)
    assert tensors["affine1.W"].shape == (784, 64)
    with safe_open(str(out), "np") as f:
        meta = f.metadata()
    assert json.loads(meta["model_spec"]) == ckpt.spec and meta["dataset"] == "mnist"


def test_safetensors_of_a_residual_net_name_the_blocks_layers(mnist_h5, tmp_path):
    from safetensors.numpy import load_file

    ckpt, net, _ = trained_checkpoint(
        mnist_h5,
        tmp_path / "ckpt-00000003.h5",
        "resnet",
        ["model.channels=[4, 8]", "model.blocks=[1, 1]"],
    )
    out = tmp_path / "resnet.safetensors"
    job = run_job(
        [*mpinet_command(), "export", str(ckpt), "--format", "safetensors", "--out", str(out)],
        timeout=60,
    )
    assert job.returncode == 0, job.output
    tensors = load_file(str(out))
    assert sorted(tensors) == sorted([*net.params, *net.state.params])
    assert tensors["block2.proj.W"].shape == (8, 4, 1, 1)  # the 1x1 projection, OIHW
    assert np.array_equal(
        tensors["block2.bn_proj.running_var"], net.state.params["block2.bn_proj.running_var"]
    )
