"""prepare: the real MNIST end to end, idempotence, --force, --val, atomic writes, the CLI."""

import argparse
import importlib
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import h5py
import numpy as np
import pytest

from mpinet.data import ensure_prepared, h5file, prepare, read_idx, sources, validate
from mpinet.data.__main__ import main as data_main

# The module, not the function of the same name that mpinet.data exports.
prepare_module = importlib.import_module("mpinet.data.prepare")

REAL = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


# --- the real files --------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "test"])
def test_hdf5_arrays_equal_the_idx_content_exactly(mnist_h5, shared_data, split):
    images_name, labels_name = REAL[split]
    with h5py.File(mnist_h5, "r") as f:
        images, labels = f[split]["images"], f[split]["labels"]
        assert images.dtype == np.uint8 and labels.dtype == np.uint8
        assert images.chunks[1:] == (28, 28) and images.compression == "gzip"
        np.testing.assert_array_equal(images[:], read_idx(shared_data / "mnist" / images_name))
        np.testing.assert_array_equal(labels[:], read_idx(shared_data / "mnist" / labels_name))


def test_real_file_attributes(mnist_h5):
    attrs = validate(mnist_h5)
    assert attrs["dataset"] == "mnist"
    assert int(attrs["format_version"]) == 1 and isinstance(attrs["format_version"], np.integer)
    for key, sha in sources.SHA256["mnist"].items():
        assert attrs[f"sha256_{key}"] == sha
    assert datetime.fromisoformat(attrs["created"]).tzinfo is not None
    assert attrs["pixel_mean"] == pytest.approx(0.1307, abs=1e-4)  # the well-known values
    assert attrs["pixel_std"] == pytest.approx(0.3081, abs=1e-4)
    assert attrs["val_size"] == 0


# --- idempotence, --force, errors (small synthetic sources: fast) ----------------------------


def test_an_existing_valid_file_is_kept(tiny_source, tmp_path):
    out = prepare("tiny", source=tiny_source(), out=tmp_path / "t.h5")
    before = os.stat(out)
    assert prepare("tiny", source=tiny_source(), out=out) == out
    after = os.stat(out)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_force_rewrites(tiny_source, tmp_path):
    out = prepare("tiny", source=tiny_source(), out=tmp_path / "t.h5")
    inode = os.stat(out).st_ino
    prepare("tiny", source=tiny_source(), out=out, force=True)
    assert os.stat(out).st_ino != inode  # a new file renamed over the old one
    validate(out, deep=True)


def test_an_invalid_existing_file_needs_force(tiny_source, tmp_path):
    out = tmp_path / "t.h5"
    out.write_text("garbage")
    with pytest.raises(ValueError, match="use --force to replace it"):
        prepare("tiny", source=tiny_source(), out=out)
    assert out.read_text() == "garbage"  # untouched
    prepare("tiny", source=tiny_source(), out=out, force=True)
    validate(out)


def test_an_existing_file_with_another_val_needs_force(tiny_source, tmp_path):
    out = prepare("tiny", source=tiny_source(), out=tmp_path / "t.h5")
    with pytest.raises(ValueError, match="with --val 0, not tiny with --val 50; use --force"):
        prepare("tiny", source=tiny_source(), out=out, val=50)


def _all_files(directory):
    return sorted(p.name for p in Path(directory).iterdir())


def test_bad_input_leaves_nothing_behind(tiny_source, tmp_path):
    source = tiny_source(test_labels=np.zeros(69, np.uint8))  # 70 test images, 69 labels
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(ValueError, match="70 images but .* holds 69 labels"):
        prepare("tiny", source=source, out=out_dir / "t.h5")
    assert _all_files(out_dir) == []


def _interrupted_write(path, splits, attrs):
    h5file.write(path, splits, attrs)
    raise KeyboardInterrupt  # Ctrl-C after the data is written, before the rename


def test_ctrl_c_leaves_no_partial_file(tiny_source, tmp_path, monkeypatch):
    monkeypatch.setattr(prepare_module, "write", _interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        prepare("tiny", source=tiny_source(), out=tmp_path / "out" / "t.h5")
    assert _all_files(tmp_path / "out") == []


def test_ctrl_c_during_force_keeps_the_old_file(tiny_source, tmp_path, monkeypatch):
    out = prepare("tiny", source=tiny_source(), out=tmp_path / "out" / "t.h5")
    monkeypatch.setattr(prepare_module, "write", _interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        prepare("tiny", source=tiny_source(), out=out, force=True)
    assert _all_files(tmp_path / "out") == ["t.h5"]
    validate(out, deep=True)


def test_default_out_is_in_the_xdg_cache(tiny_source, tmp_path, monkeypatch):
    monkeypatch.setenv("MPINET_DATA_SOURCE", str(tiny_source()))
    out = prepare("tiny")
    assert out == tmp_path / "xdg-cache" / "mpinet" / "tiny.h5"


def test_env_var_may_hold_a_folder_per_dataset(tiny_source, tmp_path, monkeypatch):
    source = tiny_source(folder="all/tiny")
    monkeypatch.setenv("MPINET_DATA_SOURCE", str(source.parent))
    validate(prepare("tiny", out=tmp_path / "t.h5"))


# --- the validation hold-out -----------------------------------------------------------------


def _split_ids(path, split):
    with h5py.File(path, "r") as f:
        images = f[split]["images"][:]
    return images[:, 0, 0].astype(np.int64) + 256 * images[:, 0, 1].astype(np.int64)


def test_val_is_deterministic_disjoint_and_complete(tiny_source, tmp_path):
    source = tiny_source(n_train=300)
    a = prepare("tiny", source=source, out=tmp_path / "a.h5", val=50)
    b = prepare("tiny", source=source, out=tmp_path / "b.h5", val=50)
    val, train = _split_ids(a, "val"), _split_ids(a, "train")
    assert len(val) == 50 and len(train) == 250
    np.testing.assert_array_equal(val, _split_ids(b, "val"))
    assert not set(val) & set(train)
    assert sorted(set(val) | set(train)) == list(range(300))
    assert list(train) == sorted(train)  # both parts keep the canonical order
    assert validate(a)["val_size"] == 50
    with h5py.File(a, "r") as f:  # labels travel with their images
        np.testing.assert_array_equal(f["val"]["labels"][:], val % 10)


def test_out_must_name_a_file(tiny_source, tmp_path):
    with pytest.raises(ValueError, match="is a directory; name the file"):
        prepare("tiny", source=tiny_source(), out=tmp_path)


@pytest.mark.parametrize("val", [300, 1000, -1, 2.5])
def test_val_must_leave_train_images(tiny_source, tmp_path, val):
    with pytest.raises(ValueError, match="--val"):
        prepare("tiny", source=tiny_source(n_train=300), out=tmp_path / "t.h5", val=val)


# --- ensure_prepared -------------------------------------------------------------------------


def test_ensure_prepared_creates_only_the_default_file_then_keeps_it(
    tiny_source, tmp_path, monkeypatch
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    default = tmp_path / "cache" / "mpinet" / "tiny.h5"
    path, how = ensure_prepared(None, dataset="tiny", source=tiny_source())
    assert path == default and how == f"prepared from {tmp_path / 'tiny-source'}"
    stamp = os.stat(default).st_mtime_ns
    assert ensure_prepared(default, dataset="tiny") == (default, "existing")
    assert os.stat(default).st_mtime_ns == stamp


def test_ensure_prepared_never_creates_an_explicit_path(tiny_source, tmp_path):
    typo = tmp_path / "fashon.h5"
    with pytest.raises(
        FileNotFoundError,
        match=r"data file .*fashon.h5: no such file; .*run "
        r"`mpinet prepare --dataset tiny --out .*fashon.h5`",
    ):
        ensure_prepared(typo, dataset="tiny", source=tiny_source())
    assert not typo.exists()


def test_ensure_prepared_refuses_a_file_of_another_dataset(tiny_source, tmp_path):
    out = prepare("tiny", source=tiny_source(), out=tmp_path / "t.h5")
    with pytest.raises(
        ValueError,
        match=r"t.h5: holds tiny; expected mnist \(data.dataset\); "
        r"set data.dataset=tiny",
    ):
        ensure_prepared(out, dataset="mnist")


def test_ensure_prepared_rejects_an_invalid_file(tmp_path):
    out = tmp_path / "t.h5"
    out.write_text("garbage")
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        ensure_prepared(out)


# --- the command line ------------------------------------------------------------------------


def _args(**kw):
    parser = argparse.ArgumentParser()
    prepare_module.add_arguments(parser)
    argv = [x for key, value in kw.items() for x in (f"--{key}", str(value))]
    return parser.parse_args(argv)


def test_run_prints_one_line_saying_what_it_did(tiny_source, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(prepare_module, "DATASETS", ("mnist", "fashion-mnist", "tiny"))
    args = _args(dataset="tiny", source=tiny_source(), out=tmp_path / "t.h5", val=10)
    assert prepare_module.run(args) == 0
    assert prepare_module.run(args) == 0
    wrote, kept = capsys.readouterr().out.splitlines()
    assert wrote.startswith(f"wrote {tmp_path / 't.h5'}: tiny train 290, test 70, val 10")
    assert kept.startswith(f"kept {tmp_path / 't.h5'} (valid; --force rewrites it)")


def test_flags_and_defaults():
    args = _args()
    assert (args.dataset, args.source, args.out, args.force, args.val) == (
        "mnist",
        None,
        None,
        False,
        0,
    )
    assert prepare_module.HELP


def test_python_m_reports_user_errors_in_one_line(tmp_path, capsys):
    assert data_main(["--source", str(tmp_path / "absent"), "--out", str(tmp_path / "x.h5")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mpinet prepare: error: source") and "no such directory" in err
    assert err.count("\n") == 1


def _mpinet_script():
    script = Path(sys.executable).with_name("mpinet")
    return script if script.exists() else None


def test_prepare_works_offline_from_the_shared_files(shared_data, tmp_path):
    out = tmp_path / "mnist.h5"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("MPINET_DATA_SOURCE", None)
    command = [sys.executable, "-m", "mpinet.data", "--source", str(shared_data / "mnist")]
    done = subprocess.run(command + ["--out", str(out)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {out}: mnist train 60000, test 10000")
    script = _mpinet_script()
    if script is None:
        pytest.skip("no `mpinet` console script next to this Python")
    again = [str(script), "prepare", "--source", str(shared_data / "mnist"), "--out", str(out)]
    done = subprocess.run(again, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"kept {out}")
