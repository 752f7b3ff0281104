"""The one atomic writer and the one-line message: what every file mpinet writes relies on."""

import errno
import os

import pytest

from mpinet.data import atomic, messages


def test_replacing_renames_the_new_file_onto_the_old_one_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text("old")
    with atomic.replacing(path) as tmp:
        assert tmp.parent == path.parent and tmp.name.startswith(".summary.json.")
        tmp.write_text("new")
        assert path.read_text() == "old"  # nothing visible before the block ends
    assert path.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


@pytest.mark.parametrize("error", [ValueError("bad"), KeyboardInterrupt()])
def test_an_exception_in_the_block_keeps_the_old_file_and_removes_the_temporary(tmp_path, error):
    path = tmp_path / "loss.png"
    path.write_text("old")
    with pytest.raises(type(error)), atomic.replacing(path) as tmp:
        tmp.write_text("half")
        raise error
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.png"]


def test_the_temporary_names_match_the_clean_up_glob(tmp_path):
    first, second = atomic.temporary_path(tmp_path / "a"), atomic.temporary_path(tmp_path / "a")
    assert first != second and first.match(atomic.TEMPORARY_GLOB)


def test_replace_text_and_append_line(tmp_path):
    path = tmp_path / "history.jsonl"
    atomic.replace_text(path, "")
    atomic.append_line(path, '{"step": 1}')
    atomic.append_line(tmp_path / "new.jsonl", "x")  # appending creates the file
    atomic.append_line(path, '{"step": 2}')
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n'
    assert (tmp_path / "new.jsonl").read_text() == "x\n"


def test_fsync_path_takes_files_and_directories(tmp_path):
    (tmp_path / "f").write_text("x")
    atomic.fsync_path(tmp_path / "f")
    atomic.fsync_path(tmp_path)
    with pytest.raises(FileNotFoundError):
        atomic.fsync_path(tmp_path / "missing")


def test_one_line_folds_whitespace_and_names_a_silent_error():
    assert messages.one_line(OSError("Can't write\n  (errno = 28,\tbuf)")) == (
        "Can't write (errno = 28, buf)"
    )
    assert messages.one_line(KeyboardInterrupt()) == "KeyboardInterrupt"


def test_written_turns_an_os_error_into_cause_file_and_advice(tmp_path):
    path = tmp_path / "run" / "summary.json"
    with pytest.raises(OSError) as raised, messages.written(path):
        raise OSError(errno.ENOSPC, "HDF5 dump\nover lines")
    assert str(raised.value) == (
        f"{path}: {os.strerror(errno.ENOSPC)}; expected to write it; free space on that "
        f"device, or choose another --run-dir"
    )
    line = messages.os_error_line(OSError(errno.EROFS, "x"), path, option="--out")
    assert line.endswith("the file system is read-only; choose another --out")
