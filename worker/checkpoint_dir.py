"""The checkpoints of a run: run_dir/checkpoints/, its `latest` pointer, pruning, resuming.

    run_dir/checkpoints/ckpt-00000600.h5   one file per save, named by the step
    run_dir/checkpoints/latest             text: the name of the newest complete file
    run_dir/checkpoints/best               text: the best file by test accuracy (keep_best)

The pointers are small text files, not symlinks, so they survive `cp -r` and object stores.
Each file is complete before it gets its name (model/checkpoint/writing.py), each pointer
is replaced atomically after that, and old files are deleted only after the pointer moved:
a crash or SIGKILL at any moment leaves the previous checkpoint and `latest` intact.
No MPI here: the training loop calls save() on rank 0 and tells the other ranks.

The names, the pointer format and the search for a valid checkpoint are read in model/
(model/checkpoint/paths.py), because `mpinet.model.load` takes a run directory too; this
module writes that layout, and re-exports the names for the trainer.
"""

import logging
import time
from pathlib import Path

import h5py
import numpy as np

from mpinet.data.atomic import TEMPORARY_GLOB, fsync_path, replace_text
from mpinet.model.checkpoint import (
    NAME,
    checkpoint_files,
    file_name,
    newest_valid,
    read,
    read_pointer,
    save,
)

log = logging.getLogger(__name__)

__all__ = [
    "NAME",
    "CheckpointDir",
    "checkpoint_files",
    "file_name",
    "find_resume",
    "read_pointer",
    "warn_skipped",
    "write_pointer",
]


class CheckpointDir:
    """Saves into run_dir/checkpoints/, keeping the last `keep_last` (0: keep all).

    keep_best: also keep the checkpoint with the highest test accuracy (the `best` pointer).
    """

    def __init__(self, run_dir, keep_last=3, keep_best=False):
        if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 0:
            raise ValueError(
                f"keep_last {keep_last!r}: expected a whole number >= 0 (0 keeps every checkpoint)"
            )
        self.dir = Path(run_dir) / "checkpoints"
        self.keep_last, self.keep_best = keep_last, keep_best
        self.last_seconds = None  # how long the last save() took, pointers and pruning included

    def save(self, net, optimizer, meta, test_accuracy=None):
        """Write ckpt-<step>.h5 (meta["step"]), move `latest` to it, prune; return its path."""
        if "step" not in meta:
            raise ValueError("CheckpointDir.save: meta must hold 'step' (it names the file)")
        start = time.perf_counter()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._remove_leftovers()
        meta = dict(meta)
        if test_accuracy is not None:
            meta["test_accuracy"] = float(test_accuracy)
        path = save(self.path(meta["step"]), net, optimizer, meta)
        write_pointer(self.dir / "latest", path.name)
        if self.keep_best and test_accuracy is not None and test_accuracy > self.best_accuracy():
            write_pointer(self.dir / "best", path.name)
        self._prune()
        self.last_seconds = time.perf_counter() - start
        log.info(
            "checkpoint %s saved in %.2f s (%.1f MB)",
            path,
            self.last_seconds,
            path.stat().st_size / 1e6,
        )
        return path

    def path(self, step):
        """Where the checkpoint of `step` is (or will be) saved: dir/ckpt-<step:08d>.h5."""
        return self.dir / file_name(step)

    def files(self):
        """The checkpoint files here, oldest step first."""
        return checkpoint_files(self.dir)

    def latest(self):
        """The file `latest` names (it may not validate), or None."""
        return read_pointer(self.dir / "latest")

    def best(self):
        """The file `best` names, or None."""
        return read_pointer(self.dir / "best")

    def best_accuracy(self):
        """The test accuracy stored in the best checkpoint; -1 when there is none."""
        best = self.best()
        return -1.0 if best is None else stored_accuracy(best)

    def best_file(self):
        """The kept checkpoint with the highest stored test_accuracy (the earliest of equal
        ones), or None when no kept file stores one. Cheap: no array is read."""
        best, best_accuracy = None, -1.0
        for path in self.files():
            accuracy = stored_accuracy(path)
            if accuracy > best_accuracy:
                best, best_accuracy = path, accuracy
        return best

    def _prune(self):
        """Delete all but the newest keep_last files; never what a pointer names."""
        if self.keep_last == 0:
            return
        kept = {self.latest(), self.best() if self.keep_best else None}
        old = self.files()[: -self.keep_last]
        for path in old:
            if path not in kept:
                path.unlink(missing_ok=True)
        if old:
            fsync_path(self.dir)

    def _remove_leftovers(self):
        """Temporary files of a save that was killed (one writer per run: none is live)."""
        for pattern in (TEMPORARY_GLOB, ".*.tmp-*"):  # the one writer's; older versions'
            for path in self.dir.glob(pattern):
                path.unlink(missing_ok=True)


def stored_accuracy(path):
    """The test_accuracy attribute of a checkpoint file; -1 when it has none or is unreadable
    (any checkpoint with an accuracy then ranks above it)."""
    try:
        with h5py.File(path, "r", locking=False) as f:
            value = f.attrs.get("test_accuracy")
    except OSError:
        return -1.0
    return float(value) if isinstance(value, float | np.floating) else -1.0


def write_pointer(path, name):
    """Replace the pointer file `path` with `name`, atomically (mpinet.data.atomic)."""
    replace_text(path, name + "\n")


def find_resume(where):
    """The checkpoint to resume from, read and validated -> Checkpoint, or None.

    `where` a checkpoint file or a `latest`/`best` pointer: that file (errors raised). A
    directory (a run directory or its checkpoints/): its newest valid checkpoint, `latest`
    first, then the others newest step first, each invalid one skipped with a warning;
    None when it holds no checkpoint at all; a CheckpointError when none is valid.
    """
    where = Path(where)
    if where.is_dir():
        return newest_valid(where, skipped=warn_skipped)
    return read(where)


def warn_skipped(error):
    """Log a checkpoint passed over because it does not validate (the message names it)."""
    log.warning("skipping %s", error)
