"""16-bit weights for inference-only checkpoints: float16, or bfloat16 (ml_dtypes).

The book's chapter 8 notes that 16-bit numbers are enough for inference. A checkpoint may
store its parameters and BatchNorm state in 16 bits (attribute `weights`); they are read
back into the network's float32, where every computation happens. HDF5 has no bfloat16
type, so bfloat16 is stored as its raw 16 bits (uint16) and viewed back.
"""

import numpy as np

STORED = {"float16": np.dtype(np.float16), "bfloat16": np.dtype(np.uint16)}


def to_stored(array, weights):
    """A float32 array as the 16-bit array a file of `weights` stores."""
    if weights == "float16":
        return array.astype(np.float16)
    from ml_dtypes import bfloat16

    return array.astype(bfloat16).view(np.uint16)


def from_stored(array, weights, dtype):
    """The stored 16-bit array back in the network's `dtype`."""
    if weights == "float16":
        return array.astype(dtype)
    from ml_dtypes import bfloat16

    return array.view(bfloat16).astype(dtype)
