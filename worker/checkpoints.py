"""The checkpoints of a run: run_dir/checkpoints/, its `latest` pointer, pruning, resuming.

    run_dir/checkpoints/ckpt-00000600.h5   one file per save, named by the step
    run_dir/checkpoints/latest             text: the name of the newest complete file
    run_dir/checkpoints/best               text: the best file by test accuracy (keep_best)

The pointers are small text files, not symlinks, so they survive `cp -r` and object stores.
Each file is complete before it gets its name (model/checkpoint.py), each pointer is
replaced atomically after that, and old files are deleted only after the pointer moved:
a crash or SIGKILL at any moment leaves the previous checkpoint and `latest` intact.
No MPI here: the training loop calls save() on rank 0 and tells the other ranks.
"""

import logging
import os
import re
import time
from pathlib import Path

import h5py

from mpinet.model.checkpoint import CheckpointError, fsync, read, save

log = logging.getLogger("mpinet.worker")

NAME = re.compile(r"ckpt-(\d{8,})\.h5")


class CheckpointDir:
    """Saves into run_dir/checkpoints/, keeping the last `keep_last` (0: keep all).

    keep_best: also keep the checkpoint with the highest test accuracy (the `best` pointer).
    """

    def __init__(self, run_dir, keep_last=3, keep_best=False):
        if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 0:
            raise ValueError(f"keep_last {keep_last!r}: expected a whole number >= 0 "
                             f"(0 keeps every checkpoint)")
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
        path = save(self.dir / f"ckpt-{int(meta['step']):08d}.h5", net, optimizer, meta)
        write_pointer(self.dir / "latest", path.name)
        if self.keep_best and test_accuracy is not None and test_accuracy > self.best_accuracy():
            write_pointer(self.dir / "best", path.name)
        self._prune()
        self.last_seconds = time.perf_counter() - start
        log.info("checkpoint %s saved in %.2f s (%.1f MB)", path, self.last_seconds,
                 path.stat().st_size / 1e6)
        return path

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
        if best is None:
            return -1.0
        try:
            with h5py.File(best, "r", locking=False) as f:
                return float(f.attrs.get("test_accuracy", -1.0))
        except OSError:  # unreadable: any new checkpoint is better than that
            return -1.0

    def best_file(self):
        """The kept checkpoint with the highest stored test accuracy, or None."""
        best, best_accuracy = None, -1.0
        for path in self.files():
            try:
                with h5py.File(path, "r", locking=False) as f:
                    accuracy = float(f.attrs.get("test_accuracy", -1.0))
            except OSError:
                continue
            if accuracy > best_accuracy:
                best, best_accuracy = path, accuracy
        return best

    def _prune(self):
        """Delete all but the newest keep_last files; never what a pointer names."""
        if self.keep_last == 0:
            return
        kept = {self.latest(), self.best() if self.keep_best else None}
        old = self.files()[:-self.keep_last]
        for path in old:
            if path not in kept:
                path.unlink(missing_ok=True)
        if old:
            fsync(self.dir)

    def _remove_leftovers(self):
        """Temporary files of a save that was killed (one writer per run: none is live)."""
        for path in self.dir.glob(".*.tmp-*"):
            path.unlink(missing_ok=True)


def checkpoint_files(directory):
    """The ckpt-<step>.h5 files in `directory`, oldest step first."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if NAME.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(NAME.fullmatch(p.name).group(1)))


def write_pointer(path, name):
    """Replace the pointer file `path` with `name`, atomically (temp file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync(path.parent)


def read_pointer(path):
    """The file a pointer names (a sibling of the pointer), or None if it names nothing."""
    try:
        name = path.read_text().strip()
    except OSError:
        return None
    if not NAME.fullmatch(name):
        return None
    return path.parent / name


def find_resume(where, mode="auto"):
    """The checkpoint to resume from, read and validated -> Checkpoint, or None.

    mode "auto": the newest checkpoint under `where` (a run directory or its checkpoints/)
    that validates: `latest` first, then the others newest step first; a file that fails
    validation is skipped with a warning. None when there is none.
    Any other mode is a path: a checkpoint file (validated, errors raised), or a directory
    searched as "auto" does.
    """
    if mode != "auto":
        where = mode
    if not Path(where).is_dir():  # a file: that one, validated (errors raised)
        return read(where)
    directory = Path(where)
    if (directory / "checkpoints").is_dir():
        directory = directory / "checkpoints"
    candidates = [read_pointer(directory / "latest")] + checkpoint_files(directory)[::-1]
    tried = set()
    for path in candidates:
        if path is None or path in tried or not path.exists():
            continue
        tried.add(path)
        try:
            return read(path)
        except CheckpointError as e:
            log.warning("skipping %s", e)
    return None
