"""MNIST and Fashion-MNIST: from the published IDX files to each rank's mini-batches.

    sources  find, download and verify the four .gz files     fetch
    idx      read an IDX file (gzipped or raw)                  read_idx
    prepare  write them as one HDF5 file (`mpinet prepare`)     prepare, ensure_prepared
    h5file   that file: written, opened, fingerprinted          fingerprint, validate
    h5layout its layout, and the checks that a file has it
    shards   which samples a rank owns                          shard_range, split_range
    batches  training batches and evaluation shares             TrainBatches, eval_share
    augment  random shifts and rotations (training only)
    classes  the class names of each data set                  class_names
    prefetch the next batch prepared in a background thread
    atomic   writing a file so that a crash never leaves half of it
    messages an exception as one line (the form of every error message)

No MPI here: ranks and world sizes come in as plain ints. atomic and messages use the standard
library only: every package of mpinet imports them.
"""

from .batches import TrainBatches, eval_share
from .classes import class_names
from .h5file import fingerprint, open_checked, validate
from .idx import read_idx
from .prepare import ensure_prepared, prepare
from .shards import shard_range, split_range
from .sources import fetch

__all__ = [
    "TrainBatches",
    "class_names",
    "ensure_prepared",
    "eval_share",
    "fetch",
    "fingerprint",
    "open_checked",
    "prepare",
    "read_idx",
    "shard_range",
    "split_range",
    "validate",
]
