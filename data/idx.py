"""Read the IDX files MNIST and Fashion-MNIST are published in, gzipped or raw.

The format (big-endian throughout): a 4-byte magic number whose third byte is the element
type (0x08 = unsigned byte) and whose fourth byte is the number of dimensions, then one 4-byte
size per dimension, then the elements. Images have magic 2051 (count, 28, 28), labels 2049
(count). Every way a file can be wrong is reported as a one-line ValueError naming the file.
"""

import gzip
import zlib
from pathlib import Path

import numpy as np

from .messages import one_line

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
GZIP_MAGIC = b"\x1f\x8b"
IMAGE_SHAPE = (28, 28)


def read_idx(path) -> np.ndarray:
    """Return the array stored in an IDX file (gzipped or raw) as a read-only uint8 array."""
    path = Path(path)
    raw = _read_bytes(path)
    magic = _magic(path, raw)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, expected {header})")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64))
    found = len(raw) - header
    if found < expected:
        raise ValueError(
            f"{path}: truncated: header says {'x'.join(map(str, shape))} = {expected} bytes "
            f"of data, file holds {found}"
        )
    if found > expected:
        raise ValueError(
            f"{path}: {found - expected} unexpected bytes after the {expected} bytes of data "
            f"the header announces"
        )
    return np.frombuffer(raw, dtype=np.uint8, count=expected, offset=header).reshape(shape)


def check_pair(images, labels, images_path, labels_path):
    """Check that an image array and a label array belong together (28x28, same count)."""
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"{images_path}: images of shape {images.shape}, expected (N, 28, 28)")
    if labels.ndim != 1:
        raise ValueError(f"{labels_path}: labels of shape {labels.shape}, expected (N,)")
    if len(images) != len(labels):
        raise ValueError(
            f"{images_path} holds {len(images)} images but {labels_path} holds "
            f"{len(labels)} labels; they must be the same count"
        )


def _read_bytes(path):
    """The file's content, decompressed when it is gzip (by name or by its first bytes)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    data = path.read_bytes()
    if not (path.suffix == ".gz" or data[:2] == GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except EOFError:
        raise ValueError(f"{path}: gzip stream truncated (the download was cut short?)") from None
    except (OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: not a valid gzip file ({one_line(e)})") from None


def _magic(path, raw):
    if len(raw) < 4:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, expected at least 4)")
    magic = int.from_bytes(raw[:4], "big")
    if magic not in (IMAGES_MAGIC, LABELS_MAGIC):
        raise ValueError(
            f"{path}: wrong magic number {magic} (0x{magic:08x}), expected {IMAGES_MAGIC} "
            f"(images) or {LABELS_MAGIC} (labels); is this an MNIST IDX file?"
        )
    return magic
