"""Transfer learning: start from another run's weights, and train only some of them.

    train.init_from = CKPT     (--init-from) a checkpoint file, run directory or pointer:
                               rank 0 copies its parameters into the new network BY NAME,
                               then the start's broadcast gives every rank the same bits;
                               the optimizer starts fresh. Checkpoints record the source
                               file and its sha256 (meta init_from, init_from_sha256).
    train.init_skip = [...]    parameter-name prefixes left as freshly initialised (a new
                               head); a shape that differs, or a parameter the source lacks,
                               is a one-line error unless skipped.
    train.freeze = [...]       parameter-name prefixes no update moves: Frozen, the same
                               ranges of the flat buffer on every rank (checked), handed to
                               the optimizer, which zeroes their gradient (their state stays
                               0); BatchNorm layers inside them keep their running statistics.

A prefix matches by str.startswith: "conv1" matches conv1.W and conv1.b (and a conv10, if a
net had one); "affine" matches every affine layer. A prefix matching nothing is an error.
"""

import logging
from pathlib import Path

from mpinet.cluster import assert_same, fail_together, on_root
from mpinet.data.sources import sha256_of
from mpinet.model.blocks import named_leaves
from mpinet.model.checkpoint import read
from mpinet.model.layers import BatchNormalization

log = logging.getLogger(__name__)
META_KEYS = ("init_from", "init_from_sha256")  # what checkpoints record of the source


def matching(names, prefixes, key):
    """The names that start with one of `prefixes` (config `key`); a ValueError names a
    prefix that matches none of them."""
    for prefix in prefixes:
        if not any(name.startswith(prefix) for name in names):
            raise ValueError(
                f"config key {key}: {prefix!r} matches no parameter; expected a prefix of "
                f"one of {', '.join(names)}; check the spelling (mpinet train "
                f"--print-config shows the model)"
            )
    return [name for name in names if any(name.startswith(p) for p in prefixes)]


class Frozen:
    """What train.freeze holds still, found the same way on every rank (checked).

    params: (start, stop) ranges of the flat parameter buffer (for the optimizer); state:
    ranges of the BatchNorm state buffer whose layers are frozen (kept by average_state_).
    """

    def __init__(self, cfg, comm, net):
        self.names, self.params, self.state, error = [], [], [], None
        try:
            self.names = matching(list(net.params), cfg.train.freeze, "train.freeze")
            self.params = net.buffer.ranges(self.names)
            self.state = net.state.ranges(self._freeze_batchnorm(net))
        except ValueError as e:
            error = e
        fail_together(comm, "applying train.freeze", error)  # dist: every rank, or none
        self.size = sum(stop - start for start, stop in self.params)
        describe = f"{len(self.names)} frozen tensors / {self.size} values"
        assert_same(  # dist: freezing never makes the ranks update differently
            comm,
            "frozen parameters",
            (self.params, self.state),
            lambda _: describe,
            hint="every rank must build the same network with the same train.freeze",
        )
        if self.names:
            log.info("train.freeze: %s (%d values) get no update", ", ".join(self.names), self.size)

    def _freeze_batchnorm(self, net):
        """Mark the BatchNorm layers whose gamma and beta are frozen -> their state names."""
        kept, layers = [], dict(named_leaves(net.layers))  # block2.bn1 inside block2 too
        for stat in net.state.params:
            name = stat.rsplit(".", 1)[0]
            if not stat.endswith(".running_mean") or f"{name}.gamma" not in self.names:
                continue
            layer = layers.get(name)
            if not isinstance(layer, BatchNormalization) or f"{name}.beta" not in self.names:
                raise ValueError(
                    f"config key train.freeze: freezes part of BatchNorm {name}; expected "
                    f"a prefix naming the whole layer ({name})"
                )
            layer.frozen = True  # training normalises with the running statistics
            kept += [f"{name}.running_mean", f"{name}.running_var"]
        return kept

    def average_state_(self, comm, net):
        """Every rank: the mean of the BatchNorm statistics over the ranks, in one message,
        the frozen layers' kept bit for bit (a mean of 3 equal floats may differ by an ulp)."""
        kept = [net.state.data[start:stop].copy() for start, stop in self.state]
        comm.allreduce_mean_(net.state.data)  # dist
        for (start, stop), values in zip(self.state, kept, strict=True):
            net.state.data[start:stop] = values


def init_from(cfg, comm, net, ckpt):
    """Rank 0 copies train.init_from's parameters into `net` (a fresh start) -> the meta its
    checkpoints record (every rank; {} without init_from). Resumed (`ckpt`, rank 0's
    checkpoint): nothing is read, the resumed checkpoint's record is carried on."""
    if not cfg.train.init_from:
        return {}

    def load():
        if ckpt is not None:  # the resumed checkpoint holds the weights and names the source
            return {key: ckpt.meta[key] for key in META_KEYS if key in ckpt.meta}
        source = read(cfg.train.init_from)
        path = Path(source.path).resolve()
        loaded, fresh = copy_by_name(source, net, cfg.train.init_skip, cfg.train.init_from)
        meta = {"init_from": str(path), "init_from_sha256": sha256_of(path)}
        log.info(
            "initialised %d tensors from %s (sha256 %s); fresh: %s",
            loaded,
            path,
            meta["init_from_sha256"][:12],
            ", ".join(fresh) or "none",
        )
        return meta

    return on_root(comm, None, load)  # dist: the copy reaches the others by the broadcast


def copy_by_name(source, net, skip, where):
    """Copy the source Checkpoint's arrays into `net` by name, after checking them all ->
    (tensors copied, the names left fresh). Parameters and BatchNorm state alike."""
    names = list(net.params) + list(net.state.params)
    fresh = matching(names, skip, "train.init_skip")
    pairs = []
    for views, arrays in ((net.params, source.params), (net.state.params, source.state)):
        for name, view in views.items():
            if name in fresh:
                continue
            if name not in arrays:
                raise ValueError(
                    f"train.init_from {where}: has no {name} (shape {view.shape} here); "
                    f"expected every parameter of this network; name it in "
                    f"train.init_skip to initialise it fresh"
                )
            if arrays[name].shape != view.shape:
                layer = name.rsplit(".", 1)[0]
                raise ValueError(
                    f"train.init_from {where}: {name} has shape {arrays[name].shape} there, "
                    f"{view.shape} here; expected the same shape; name it in "
                    f"train.init_skip to initialise it fresh (e.g. --set "
                    f"\"train.init_skip=['{layer}']\")"
                )
            pairs.append((view, arrays[name]))
    for view, array in pairs:
        view[...] = array  # in place (cast to this network's dtype): views stay in the buffer
    return len(pairs), fresh


def check_flags(args):
    """--init-from with --resume: refused (a resume restores every parameter itself)."""
    if getattr(args, "init_from", None) and args.resume:
        raise ValueError(
            f"--init-from {args.init_from}: given with --resume {args.resume}; expected one "
            f"of them: a resume restores every parameter and the optimizer from the run's "
            f"own checkpoint; drop --init-from, or start a new run (another --run-dir)"
        )
