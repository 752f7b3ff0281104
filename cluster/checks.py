"""Cross-rank checks: every rank compares everyone's summary and raises the same error.

A check that ran on rank 0 alone would leave the other ranks waiting in a collective while
rank 0 raises. Here every rank hashes its value, the short summaries are allgathered, and
every rank builds the same message from the same list, so the job fails together with an
`AllRanksError` at the same point (and exits cleanly, see abort.py). Each check is a
collective: every rank must call it, in the same order. (Errors found on some ranks only,
not by comparing: together.py.)

    assert_same_layout(comm, net.buffer.layout())   # after building the network
    assert_same_config(comm, resolved_toml_text)
    assert_same_data(comm, data_fingerprint)
    assert_same_params(comm, net.buffer.data)       # at start, and every N steps
"""

import hashlib
import math

import numpy as np

from .errors import AllRanksError, format_ranks


def assert_same(comm, what, value, describe=None, hint=""):
    """Raise AllRanksError on every rank unless `value` is the same on every rank.

    Values are compared by `digest`; `describe(value)` is the short text that names each
    rank's value in the message (default: the start of the sha256), `hint` says what to do
    about it.
    """
    mine = digest(value)
    summary = describe(value) if describe else f"sha256 {mine[:12]}"
    gathered = comm.allgather_object((mine, summary))
    if len({d for d, _ in gathered}) > 1:
        raise AllRanksError(mismatch_message(what, gathered, hint))


def assert_same_layout(comm, layout):
    """The parameter layout: a sequence of (name, shape, dtype string) in construction order."""
    assert_same(
        comm,
        "parameter layout",
        tuple(layout),
        describe=_describe_layout,
        hint="every rank must build the same network from the same model spec",
    )


def assert_same_config(comm, config_text):
    """The resolved configuration, as text (e.g. the TOML written to the run directory)."""
    assert_same(
        comm,
        "resolved config",
        config_text,
        hint="every rank must read the same config file with the same --set flags",
    )


def assert_same_data(comm, data_id):
    """The data set: any value that identifies it (e.g. the sha256 stored in the file)."""
    assert_same(
        comm,
        "data file",
        data_id,
        describe=_describe_short,
        hint="every rank must open the same HDF5 file (same contents on every node)",
    )


def assert_same_params(comm, flat):
    """The replica-divergence check: the parameter buffer must be bit-identical everywhere."""
    assert_same(
        comm,
        "parameter checksum",
        flat,
        hint="the replicas diverged: an update differed between ranks (rank-dependent "
        "code, a non-deterministic kernel, or a corrupted message)",
    )


def mismatch_message(what, gathered, hint=""):
    """'parameter checksum differs across ranks: ranks 0-2 have X, rank 3 has Y; <hint>'.

    `gathered[rank]` is (digest, summary). Ranks are grouped by digest, in order of their
    lowest rank; groups whose summaries read alike also show their digest.
    """
    groups = {}
    for rank, (value_digest, summary) in enumerate(gathered):
        groups.setdefault(value_digest, (summary, []))[1].append(rank)
    summaries = [summary for summary, _ in groups.values()]
    parts = []
    for value_digest, (summary, ranks) in groups.items():
        if summaries.count(summary) > 1:
            summary = f"{summary} (sha256 {value_digest[:12]})"
        verb = "has" if len(ranks) == 1 else "have"
        parts.append(f"{format_ranks(ranks)} {verb} {summary}")
    message = f"{what} differs across ranks: " + ", ".join(parts)
    return f"{message}; {hint}" if hint else message


def digest(value):
    """The sha256 hex digest of an array (dtype, shape and bytes), bytes, str or repr()."""
    h = hashlib.sha256()
    if isinstance(value, np.ndarray):
        h.update(f"{value.dtype.str}{value.shape}".encode())
        h.update(np.ascontiguousarray(value).data)
    elif isinstance(value, bytes | bytearray | memoryview):
        h.update(value)
    elif isinstance(value, str):
        h.update(value.encode())
    else:
        h.update(repr(value).encode())
    return h.hexdigest()


def _describe_layout(layout):
    values = sum(math.prod(shape) for _, shape, _ in layout)
    return f"{len(layout)} tensors / {values} values"


def _describe_short(value):
    text = value if isinstance(value, str) else repr(value)
    return repr(text) if len(text) <= 48 else f"sha256 {digest(value)[:12]}"
