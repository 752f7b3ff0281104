"""Checkpoint files: the whole training state in ONE HDF5 file, validated before use.

    schema.py    what the file holds: its layout, every attribute's rule, the checksums
    rules.py     what an attribute's value may be (Rule and its validators), RNG state text
    writing.py   save(): the file written atomically
    reading.py   read_file(): one file, every part checked before anything is returned
    paths.py     which file a path means: a file, a `latest`/`best` pointer, a run directory
    loading.py   read(), load(), network(), restore(): from a path to a Checkpoint or Network

The format is docs/checkpoints.md; a run's folder of checkpoints is worker/checkpoint_dir.py.
"""

from .loading import load, network, read, restore
from .paths import NAME, checkpoint_files, file_name, locate, newest_valid, read_pointer, resolve
from .reading import Checkpoint
from .rules import rng_state, set_rng_state
from .schema import FORMAT_VERSION, META, CheckpointError
from .writing import optimizer_name, save

__all__ = [
    "FORMAT_VERSION",
    "META",
    "NAME",
    "Checkpoint",
    "CheckpointError",
    "checkpoint_files",
    "file_name",
    "load",
    "locate",
    "network",
    "newest_valid",
    "optimizer_name",
    "read",
    "read_pointer",
    "resolve",
    "restore",
    "rng_state",
    "save",
    "set_rng_state",
]
