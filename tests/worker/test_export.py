"""`mpinet export CKPT --format onnx`: every network the project builds, loaded by
onnxruntime, gives mpinet's scores on real MNIST test images."""

import json

import h5py
import numpy as np
import pytest
from support import mpinet_command, run_job

from mpinet.data import TrainBatches
from mpinet.model import build
from mpinet.model.checkpoint import save
from mpinet.model.networks import PLANS
from mpinet.model.optimizers import create
from mpinet.worker.config import load_config, model_spec, to_toml

onnx = pytest.importorskip("onnx", reason="ONNX TESTS SKIPPED: pip install '.[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="ONNX TESTS SKIPPED: pip install '.[onnx]'")

# Every net of the registry (a new one without an export fails here), and the layers each
# option adds: BatchNorm, dropout (the identity at inference), other activations.
VARIANTS = {
    "mlp": [["model.hidden=[32, 16]", "model.batchnorm=true", "model.dropout=0.2"],
            ["model.hidden=[24]", "model.activation='sigmoid'"],
            ["model.hidden=[24]", "model.activation='tanh'", "data.normalize='standard'"]],
    "simple_cnn": [["model.filters=6", "model.hidden=20"],
                   ["model.filters=4", "model.filter_size=3", "model.pad=1", "model.stride=2",
                    "model.batchnorm=true"]],
    "deep_cnn": [["model.filters=[4, 4, 6, 6, 8, 8]", "model.hidden=16"]],
}
CASES = [(name, settings) for name in sorted(PLANS) for settings in VARIANTS.get(name, [[]])]


def trained_checkpoint(mnist_h5, out, name, settings, steps=3):
    """A few real training steps (BatchNorm statistics move), saved as the loop saves."""
    cfg = load_config(None, [f"model.name='{name}'", f"data.path='{mnist_h5}'", *settings])
    shape = "flat" if name == "mlp" else "image"
    batches = TrainBatches(mnist_h5, global_batch=50, rank=0, world_size=1, seed=0,
                           shape=shape, normalize=cfg.data.normalize, prefetch=False)
    net, opt = build(model_spec(cfg), seed=0), create("adam", lr=0.01)
    for _, (x, t) in zip(range(steps), batches.epoch(0), strict=False):
        net.loss(x, t)
        net.backward()
        opt.update(net.buffer.data, net.buffer.grad)
    meta = {"step": steps, "config": to_toml(cfg)}
    if batches.stats is not None:
        meta.update(pixel_mean=batches.stats[0], pixel_std=batches.stats[1])
    return save(out, net, opt, meta), net, batches.stats


@pytest.mark.parametrize("name,settings", CASES, ids=[f"{n}-{i}" for i, (n, _) in
                                                      enumerate(CASES)])
def test_every_network_exports_to_onnx_with_the_same_scores(mnist_h5, tmp_path, name,
                                                             settings):
    ckpt, net, stats = trained_checkpoint(mnist_h5, tmp_path / "ckpt-00000003.h5", name,
                                          settings)
    out = tmp_path / "model.onnx"
    job = run_job([*mpinet_command(), "export", str(ckpt), "--format", "onnx", "--out",
                   str(out)], timeout=60)
    assert job.returncode == 0, job.output
    assert job.stdout.startswith(f"wrote {out}: {name} from {ckpt}")
    model = onnx.load(out)
    onnx.checker.check_model(model)
    ops = {node.op_type for node in model.graph.node}
    assert "Dropout" not in ops and ("BatchNormalization" in ops) == any("batchnorm" in s
                                                                          for s in settings)
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
    job = run_job([*mpinet_command(), "export", str(fashion_checkpoint), "--out", str(out)],
                  timeout=60)
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
