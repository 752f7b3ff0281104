"""A class-balanced subset of the training split (config `data.train_limit`): few labels.

balanced_subset(labels, n, seed) draws ONE permutation of the whole split from
default_rng(seed) and takes, for each class, the first n / classes samples of that class in
permutation order. The subset depends only on the labels, n and the seed: never on the rank
or the world size, so `-n 1` and `-n 2` train on the same samples, in either data order
(each rank then takes its share of the subset as it would of the whole split).
"""

import hashlib

import numpy as np


def balanced_subset(labels, n, seed):
    """The sorted indices of n samples, n / classes per class (classes: the labels found).

    A one-line ValueError when n does not divide by the classes or a class has too few.
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    per_class, extra = divmod(n, len(classes))
    if extra or per_class == 0:
        lower = max(per_class, 1) * len(classes)
        raise ValueError(
            f"data.train_limit {n}: does not divide into the {len(classes)} classes of the "
            f"training split; expected a multiple of {len(classes)}, e.g. {lower}"
        )
    if counts.min() < per_class:
        c = int(np.argmin(counts))  # the smallest class
        raise ValueError(
            f"data.train_limit {n}: class {classes[c]} has only {counts[c]} training "
            f"samples, fewer than {per_class} ({n} / {len(classes)}); expected at most "
            f"{len(classes) * int(counts.min())}, or 0 for the whole split"
        )
    order = np.random.default_rng(seed).permutation(len(labels))
    ordered = labels[order]
    chosen = [order[ordered == c][:per_class] for c in classes]
    return np.sort(np.concatenate(chosen))


def read_rows(dataset, index):
    """dataset[index] for sorted indices: one contiguous read from the first to the last,
    then a selection in memory (far faster than h5py's point selection)."""
    if len(index) == 0:
        return dataset[0:0]
    first, last = int(index[0]), int(index[-1])
    return dataset[first : last + 1][index - first]


def describe_subset(index):
    """'1000 samples, indices sha256 3f2a...': the same text on every world size."""
    digest = hashlib.sha256(np.asarray(index, np.int64).tobytes()).hexdigest()
    return f"{len(index)} class-balanced samples of the split, indices sha256 {digest[:12]}"
