"""One resolver for every command: a checkpoint file, a `latest`/`best` pointer, a run
directory or its checkpoints/ folder all name a checkpoint; each failure is one line."""

import pytest
from checkpoint_support import trained

from mpinet.model import load
from mpinet.model.checkpoint import CheckpointError, read, resolve, save


@pytest.fixture
def run(tmp_path):
    """A run directory as the trainer leaves it: three checkpoints, `latest` and `best`."""
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    net, opt = trained({"name": "mlp", "hidden": [12]})
    for step in (100, 200, 300):
        net.buffer.data[0] = step  # each file holds other weights
        save(folder / f"ckpt-{step:08d}.h5", net, opt, {"step": step})
    (folder / "latest").write_text("ckpt-00000300.h5\n")
    (folder / "best").write_text("ckpt-00000200.h5\n")
    return tmp_path / "run"


def test_every_form_names_a_checkpoint(run):
    folder = run / "checkpoints"
    assert resolve(run) == folder / "ckpt-00000300.h5"
    assert resolve(folder) == folder / "ckpt-00000300.h5"
    assert resolve(folder / "latest") == folder / "ckpt-00000300.h5"
    assert resolve(folder / "best") == folder / "ckpt-00000200.h5"
    assert resolve(folder / "ckpt-00000100.h5") == folder / "ckpt-00000100.h5"
    assert read(folder / "best").meta["step"] == 200
    assert read(run).path == folder / "ckpt-00000300.h5"
    assert load(run).buffer.data[0] == 300 and load(folder / "best").buffer.data[0] == 200


def test_latest_is_first_even_when_a_newer_step_exists(run):
    folder = run / "checkpoints"
    (folder / "latest").write_text("ckpt-00000200.h5\n")
    assert resolve(run) == folder / "ckpt-00000200.h5"


def test_a_directory_skips_invalid_checkpoints_and_says_so(run):
    folder = run / "checkpoints"
    newest = folder / "ckpt-00000300.h5"
    newest.write_bytes(newest.read_bytes()[:2000])
    skipped = []
    assert read(run, skipped=skipped.append).path == folder / "ckpt-00000200.h5"
    assert len(skipped) == 1  # named by `latest` and by its step: tried once
    assert str(skipped[0]).startswith(f"checkpoint {newest}: not a readable HDF5 file")


def test_a_directory_without_a_valid_checkpoint_is_one_line(run, tmp_path):
    folder = run / "checkpoints"
    for path in folder.glob("ckpt-*.h5"):
        path.write_text("gone")
    with pytest.raises(CheckpointError) as error:
        resolve(run)
    text = str(error.value)
    assert text.startswith(
        f"checkpoint folder {folder}: none of its 3 checkpoint(s) is valid "
        f"(the newest: checkpoint {folder / 'ckpt-00000300.h5'}: not a "
        f"readable HDF5 file"
    )
    assert (
        text.endswith("; expected at least one; restore them from a copy or start a fresh run")
        and "\n" not in text
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError) as error:
        load(empty)
    assert str(error.value) == (
        f"run directory {empty}: no checkpoint (no ckpt-<step>.h5 in {empty}); expected a run "
        f"that saved one; train it further, or pass a checkpoint file"
    )


def test_bad_pointers_and_missing_paths_are_one_line(run):
    folder = run / "checkpoints"
    (folder / "best").write_text("ckpt-00000999.h5\n")
    with pytest.raises(CheckpointError) as error:
        read(folder / "best")
    assert str(error.value) == (
        f"checkpoint pointer {folder / 'best'}: names ckpt-00000999.h5, which does not exist; "
        f"expected a file beside it; pass the run directory to use its newest valid checkpoint"
    )
    (folder / "latest").write_text("../../etc/passwd\n")  # only a sibling's name is a pointer
    with pytest.raises(
        CheckpointError,
        match=r"checkpoint pointer .*latest: holds "
        r"b'../../etc/passwd\\n'; expected the name of a "
        r"ckpt-<step>.h5 file beside it",
    ):
        resolve(folder / "latest")
    assert resolve(run) == folder / "ckpt-00000300.h5"  # a directory passes a bad pointer over
    missing = run / "nothing.h5"
    with pytest.raises(CheckpointError) as error:
        load(missing)
    assert str(error.value) == (
        f"checkpoint {missing}: no such file or directory; expected a checkpoint file, a run "
        f"directory or its checkpoints/latest; check the path"
    )


def test_a_text_file_that_is_not_a_pointer_is_reported_as_not_hdf5(tmp_path):
    bad = tmp_path / "model.h5"
    bad.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=f"checkpoint {bad}: not a readable HDF5 file"):
        read(bad)
