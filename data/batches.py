"""Each rank's mini-batches for training, and its share of a split for evaluation.

Two orders (config `data.order`):
- "shard" (default; scales past memory): the rank reads only its shard, a contiguous
  equal-size 1/world_size of the split, once, and shuffles it every epoch with
  default_rng((seed, epoch, rank)). It holds N/world_size images in memory (uint8).
- "global": one permutation of the whole split per epoch, default_rng((seed, epoch)); global
  batch k is perm[k*B:(k+1)*B] and rank r takes its contiguous slice of it. The batches are
  then the same for any world size, which is what makes -n 1, -n 2 and -n 4 train the same
  model. Each rank holds the whole split in memory (uint8: 47 MB for MNIST).
With `limit` (data.train_limit) the split is first narrowed to a class-balanced subset of
that many samples (data/subsets.py: the same for any world size); both orders then apply.

The uint8 pixels are converted per batch: scaled to [0, 1] in the requested dtype, optionally
augmented (training only) and standardised, and shaped (n, 784) or (n, 1, 28, 28).
"""

import logging
from functools import partial

import numpy as np

from .augment import check_augment, draw, shift_rotate
from .h5file import open_checked
from .prefetch import prefetched
from .shards import check_rank, shard_range, split_range
from .subsets import balanced_subset, read_rows

log = logging.getLogger(__name__)

ORDERS = ("shard", "global")
SHAPES = {"flat": (784,), "image": (1, 28, 28)}
NORMALIZE = ("unit", "standard")
DTYPES = ("float32", "float64")
AUGMENT_STREAM = 1  # keeps the augmentation's random stream apart from the shuffle's


class TrainBatches:
    """The training batches one rank processes; every rank gets the same steps_per_epoch."""

    def __init__(
        self,
        path,
        *,
        global_batch,
        rank,
        world_size,
        seed,
        order="shard",
        dtype="float32",
        shape="flat",
        normalize="unit",
        augment=None,
        prefetch=True,
        split="train",
        limit=0,
    ):
        self.dtype = _check_options(order, dtype, shape, normalize)
        check_rank(rank, world_size)
        self.local_batch = local_batch(global_batch, world_size)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed {seed!r}: expected a whole number >= 0")
        self.global_batch, self.rank, self.world_size = global_batch, rank, world_size
        self.seed, self.order, self.shape, self.prefetch = seed, order, shape, prefetch
        self.augment = check_augment(augment)
        with open_checked(path) as f:
            n = self._read(path, f, split, limit)
            self.stats = _stats(f, normalize)
        self.steps_per_epoch = self._count_steps(path, split, n)
        # Samples left out of each epoch (drop_last; in shard order this includes the
        # n % world_size past the last shard, which are never seen).
        self.dropped = n - self.steps_per_epoch * global_batch
        log.debug(
            "rank %d holds %d samples: %d steps per epoch, %d samples dropped",
            rank,
            self.samples_per_rank,
            self.steps_per_epoch,
            self.dropped,
        )

    def _read(self, path, f, split, limit):
        """Read this rank's samples once (the pixels stay uint8 until a batch is made) ->
        the number of samples the ranks share: the split's, or with `limit` (data.train_limit)
        the class-balanced subset's, the same for every world size (data/subsets.py)."""
        n = _split_size(path, f, split)
        self.subset = None  # the subset's sorted indices into the split (all ranks' samples)
        if limit:
            self.subset = balanced_subset(f[split]["labels"][:], limit, self.seed)
            n = len(self.subset)
        start, stop = (
            shard_range(n, self.rank, self.world_size) if self.order == "shard" else (0, n)
        )
        if self.subset is None:
            self.images = f[split]["images"][start:stop]
            self.labels = f[split]["labels"][start:stop]
        else:
            mine = self.subset[start:stop]
            self.images = read_rows(f[split]["images"], mine)
            self.labels = read_rows(f[split]["labels"], mine)
        self.samples_per_rank = stop - start
        return n

    def _count_steps(self, path, split, n):
        """Steps per epoch, the same on every rank: only whole batches (drop_last)."""
        if self.order == "shard":
            steps = self.samples_per_rank // self.local_batch
        else:
            steps = n // self.global_batch
        if steps == 0:
            raise ValueError(
                f"{path}: /{split} holds {n} samples, fewer than one global batch of "
                f"{self.global_batch} over {self.world_size} ranks; lower train.batch_size"
            )
        return steps

    def epoch(self, epoch, start_step=0):
        """Yield (x, t) for steps start_step .. steps_per_epoch - 1 of this epoch.

        The sequence depends only on (seed, epoch, rank) ((seed, epoch) in global order), so a
        run resumed with start_step=k continues exactly where step k would have been.
        """
        if not 0 <= start_step <= self.steps_per_epoch:
            raise ValueError(f"start_step {start_step}: expected 0..{self.steps_per_epoch}")
        make = partial(self._batch, epoch, self._permutation(epoch))
        steps = range(start_step, self.steps_per_epoch)
        if self.prefetch:
            return prefetched(make, steps)
        return (make(step) for step in steps)

    def steps(self, start, stop, accumulate=1):
        """Yield, for each optimizer step start .. stop - 1, its `accumulate` micro-batches
        [(x, t), ...], crossing epoch boundaries: ONE iterator for the whole run.

        An epoch has steps_per_epoch // accumulate steps (the micro-batches left over at an
        epoch's end are skipped); step s takes micro-batches (s mod that) * accumulate + j of
        epoch s // that, exactly the ones `epoch()` yields, so a resumed run continues where
        step `start` would have been. With data.prefetch, whole steps are made ahead in a
        thread; close() the iterator to stop it early.
        """
        per_epoch = self.steps_per_epoch // accumulate
        perms = {}  # epoch -> its permutation (only the current one is kept)

        def make(step):
            epoch, position = divmod(step, per_epoch)
            if epoch not in perms:
                perms.clear()
                perms[epoch] = self._permutation(epoch)
            first = position * accumulate
            return [self._batch(epoch, perms[epoch], first + j) for j in range(accumulate)]

        steps = range(start, stop)
        return prefetched(make, steps) if self.prefetch else (make(step) for step in steps)

    def _permutation(self, epoch):
        if self.order == "shard":
            rng = np.random.default_rng((self.seed, epoch, self.rank))
        else:
            rng = np.random.default_rng((self.seed, epoch))
        return rng.permutation(len(self.labels))

    def _batch(self, epoch, perm, step):
        b = self.local_batch
        first = step * b if self.order == "shard" else step * self.global_batch + self.rank * b
        index = perm[first : first + b]
        params = self._augment_params(epoch, step) if self.augment else None
        x = to_inputs(self.images[index], self.dtype, self.shape, self.stats, params)
        return x, self.labels[index].astype(np.int64)

    def _augment_params(self, epoch, step):
        """Shifts and angles for this step; in global order the same for any world size."""
        shift, rotate = self.augment["shift"], self.augment["rotate"]
        if self.order == "shard":
            rng = np.random.default_rng((self.seed, epoch, self.rank, step, AUGMENT_STREAM))
            return draw(rng, self.local_batch, shift, rotate)
        # Draw for the whole global batch, then keep this rank's slice of it.
        rng = np.random.default_rng((self.seed, epoch, step, AUGMENT_STREAM))
        mine = slice(self.rank * self.local_batch, (self.rank + 1) * self.local_batch)
        return tuple(p[mine] for p in draw(rng, self.global_batch, shift, rotate))


def eval_share(path, split, rank, world_size, dtype="float32", shape="flat", normalize="unit"):
    """This rank's contiguous part (x, t) of a split; over all ranks, every sample exactly once."""
    dtype = _check_options("shard", dtype, shape, normalize)
    with open_checked(path) as f:
        start, stop = split_range(_split_size(path, f, split), rank, world_size)
        images = f[split]["images"][start:stop]
        labels = f[split]["labels"][start:stop]
        stats = _stats(f, normalize)
    return to_inputs(images, dtype, shape, stats), labels.astype(np.int64)


def local_batch(global_batch, world_size) -> int:
    """Each rank's share of the global batch; it must divide evenly."""
    if isinstance(global_batch, bool) or not isinstance(global_batch, int) or global_batch < 1:
        raise ValueError(f"train.batch_size {global_batch!r}: expected a whole number >= 1")
    if global_batch % world_size:
        lower = global_batch // world_size * world_size
        upper = lower + world_size
        raise ValueError(
            f"train.batch_size {global_batch} does not divide over {world_size} ranks; set it "
            f"to a multiple of {world_size}, e.g. {lower or upper} or {upper}"
        )
    return global_batch // world_size


def to_inputs(images, dtype, shape, stats=None, params=None):
    """uint8 images (n, 28, 28) -> the network's input in `dtype`.

    Scaled to [0, 1]; then, if given, moved by the augmentation params and standardised by
    stats = (mean, std); shaped (n, 784) for shape "flat" or (n, 1, 28, 28) for "image".
    """
    x = images.astype(dtype)
    x /= 255  # in place, so the dtype stays what was asked for
    if params is not None:
        x = shift_rotate(x, *params)
    if stats is not None:
        x -= stats[0]
        x /= stats[1]
    return x.reshape((len(x),) + SHAPES[shape])


def _stats(f, normalize):
    """(mean, std) of the train pixels for "standard", None for "unit"."""
    if normalize == "unit":
        return None
    return float(f.attrs["pixel_mean"]), float(f.attrs["pixel_std"])


def _split_size(path, f, split):
    if split not in f:
        raise ValueError(f"{path}: no /{split} split (it has: {', '.join(sorted(f))})")
    return len(f[split]["labels"])


def _check_options(order, dtype, shape, normalize):
    """Validate the batch options; return the dtype as a NumPy dtype."""
    for name, value, valid in (
        ("data.order", order, ORDERS),
        ("dtype", str(np.dtype(dtype)) if _is_dtype(dtype) else dtype, DTYPES),
        ("shape", shape, tuple(SHAPES)),
        ("normalize", normalize, NORMALIZE),
    ):
        if value not in valid:
            raise ValueError(f"{name} {value!r}: expected one of {', '.join(valid)}")
    return np.dtype(dtype)


def _is_dtype(value):
    try:
        np.dtype(value)
    except TypeError:
        return False
    return True
