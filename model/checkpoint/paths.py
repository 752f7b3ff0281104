"""Which checkpoint file a path means: a file, a `latest`/`best` pointer, or a run directory.

    runs/x                                  a run directory: its newest valid checkpoint
    runs/x/checkpoints                      the same
    runs/x/checkpoints/latest               a pointer: the file it names
    runs/x/checkpoints/ckpt-00000600.h5     that file

A pointer is a small text file holding the name of a sibling ckpt-<step>.h5 (text, not a
symlink, so a run copied with cp -r, rsync or an object store keeps working). In a
directory the file `latest` names is tried first, then the others, newest step first;
one that fails validation is skipped (reported to `skipped`, if given).

This is the reading half of a run's checkpoint folder, in model/ because `mpinet.model.load`
takes a run directory and model/ never imports worker/; the writing half (saving into the
folder, moving the pointers, pruning) is worker/checkpoint_dir.py, which names files with
file_name() and reads them with the functions here.
"""

import re
from pathlib import Path

from .reading import read_file
from .schema import CheckpointError

NAME = re.compile(r"ckpt-(\d{8,})\.h5")
POINTERS = ("latest", "best")
MAX_POINTER_BYTES = 1024  # a pointer holds one file name; anything larger is a checkpoint
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def file_name(step):
    """'ckpt-00000600.h5': the name of the checkpoint of `step` (NAME matches it)."""
    return f"ckpt-{int(step):08d}.h5"


def checkpoint_files(directory):
    """The ckpt-<step>.h5 files in `directory`, oldest step first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if NAME.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(NAME.fullmatch(p.name).group(1)))


def read_pointer(path):
    """The file a pointer names (a sibling of the pointer), or None if it names nothing."""
    try:
        name = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not NAME.fullmatch(name):
        return None
    return Path(path).parent / name


def checkpoint_folder(directory):
    """A run directory's checkpoints/ folder; a folder without one is taken as it is."""
    directory = Path(directory)
    inside = directory / "checkpoints"
    return inside if inside.is_dir() else directory


def is_pointer(path):
    """True for a small file that is not HDF5: a pointer (valid or not)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size > MAX_POINTER_BYTES:
        return False
    head = path.read_bytes()
    if head.startswith(HDF5_SIGNATURE):
        return False
    return path.name in POINTERS or read_pointer(path) is not None


def pointer_target(path):
    """The existing file the pointer `path` names, or a one-line CheckpointError."""
    where = f"checkpoint pointer {path}"
    target = read_pointer(path)
    if target is None:
        text = path.read_bytes()[:40]
        raise CheckpointError(
            f"{where}: holds {text!r}; expected the name of a "
            f"ckpt-<step>.h5 file beside it; pass the run directory to use "
            f"its newest valid checkpoint"
        )
    if not target.is_file():
        raise CheckpointError(
            f"{where}: names {target.name}, which does not exist; expected "
            f"a file beside it; pass the run directory to use its newest "
            f"valid checkpoint"
        )
    return target


def newest_valid(directory, skipped=None):
    """The newest checkpoint under `directory` that validates -> Checkpoint, or None when
    it holds no checkpoint at all. `skipped(error)` hears about each invalid one; when none
    validates, a CheckpointError names the directory."""
    folder = checkpoint_folder(directory)
    candidates = [read_pointer(folder / "latest")] + checkpoint_files(folder)[::-1]
    tried, problems = [], []
    for path in candidates:
        if path is None or path in tried or not path.is_file():
            continue
        tried.append(path)
        try:
            return read_file(path)[0]
        except CheckpointError as e:
            problems.append(e)
            if skipped is not None:
                skipped(e)
    if not tried:
        return None
    raise CheckpointError(
        f"checkpoint folder {folder}: none of its {len(tried)} checkpoint(s) "
        f"is valid (the newest: {problems[0]}); expected at least one; "
        f"restore them from a copy or start a fresh run"
    )


def locate(path, skipped=None):
    """(the checkpoint file `path` means, its Checkpoint if already read, else None).

    A file that is HDF5 -> itself; a pointer -> the file it names; a directory -> its
    newest valid checkpoint (read and validated on the way, so returned too).
    """
    path = Path(path)
    if path.is_dir():
        ckpt = newest_valid(path, skipped)
        if ckpt is None:
            raise CheckpointError(
                f"run directory {path}: no checkpoint (no ckpt-<step>.h5 in "
                f"{checkpoint_folder(path)}); expected a run that saved one; "
                f"train it further, or pass a checkpoint file"
            )
        return ckpt.path, ckpt
    if not path.exists():
        raise CheckpointError(
            f"checkpoint {path}: no such file or directory; expected a "
            f"checkpoint file, a run directory or its checkpoints/latest; "
            f"check the path"
        )
    if is_pointer(path):
        return pointer_target(path), None
    return path, None


def resolve(path, skipped=None):
    """The checkpoint file `path` means (see locate) -> Path; a CheckpointError otherwise."""
    return locate(path, skipped)[0]
