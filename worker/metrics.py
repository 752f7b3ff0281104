"""Prometheus metrics: every rank serves its own registry on metrics.port + local rank.

Not prometheus-client's multiprocess mode: that is for forked workers sharing a directory
on one host, while MPI ranks span hosts. Each rank is its own target, labelled `rank`; step
and epoch are values, never labels (a label per step would be a new series per step).
docs/metrics.md lists every metric; deploy/ scrapes them, alerts on them and plots them.
"""

import logging
import socket
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

from mpinet.worker.environment import package_version

from .push import push_summary

log = logging.getLogger(__name__)

PHASES = ("data", "forward", "backward", "allreduce", "optimizer")
SPLITS = ("train", "test")
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
CHECKPOINT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """The training metrics of one rank; a no-op holder when metrics.port is -1 (off).

    The Pushgateway push at close() is independent of the port: a batch job that nobody
    scrapes can still report its final summary.
    """

    def __init__(self, cfg, comm):
        self.comm = comm
        self.job = cfg.metrics.job
        self.pushgateway = cfg.metrics.pushgateway
        self.started = time.time()
        self.enabled = cfg.metrics.port >= 0
        self.port = None
        self.url = None  # http://host:port/metrics once serving
        self.server = None
        if not self.enabled:
            return
        self.registry = CollectorRegistry()
        self._define(cfg, comm)
        port = cfg.metrics.port + comm.local_rank if cfg.metrics.port else 0
        self.server = self._serve(cfg.metrics.host, port)

    def _define(self, cfg, comm):
        """Create every metric with this rank's constant labels (rank, job; trial)."""
        labels = {"rank": str(comm.rank), "job": cfg.metrics.job}
        if cfg.metrics.trial >= 0:  # one trial of `mpinet search`
            labels["trial"] = str(cfg.metrics.trial)
        self._names, self._values = list(labels), list(labels.values())
        self._define_steps()
        self._define_evaluations()
        self._define_run(cfg, comm)
        self._seen_bytes, self._seen_wait = 0, 0.0

    # Gauges without a value yet are absent, never 0.0: an alert on "accuracy < 0.9" must
    # not fire before the first evaluation, nor "loss is NaN" before a step.

    def _one(self, kind, name, doc, **kw):  # a metric with this rank's labels only
        return kind(name, doc, self._names, registry=self.registry, **kw).labels(*self._values)

    def _unset(self, name, doc):  # a gauge absent from the scrape until it has a value
        return Unset(Gauge(name, doc, self._names, registry=self.registry), self._values)

    def _per(self, kind, name, doc, label, keys, **kw):  # a child per value of a bounded label
        metric = kind(name, doc, self._names + [label], registry=self.registry, **kw)
        return {key: metric.labels(*self._values, key) for key in keys}

    def _per_unset(self, name, doc, label, keys):
        metric = Gauge(name, doc, self._names + [label], registry=self.registry)
        return {key: Unset(metric, [*self._values, key]) for key in keys}

    def _define_steps(self):
        self.loss = self._unset("mpinet_train_loss", "Training loss of the last step")
        self.accuracy = self._unset(
            "mpinet_train_accuracy", "Training accuracy since the last evaluation"
        )
        self.samples = self._one(
            Counter,
            "mpinet_train_samples",
            "Training samples processed by the job (global batch per step)",
        )
        self.steps = self._one(Counter, "mpinet_train_steps", "Optimizer steps completed")
        self.phase = self._per(
            Histogram,
            "mpinet_step_phase_duration_seconds",
            "Time of one step's phases on this rank",
            "phase",
            PHASES,
            buckets=STEP_BUCKETS,
        )
        self.step_seconds = self._one(
            Histogram,
            "mpinet_step_duration_seconds",
            "Time of one whole training step on this rank",
            buckets=STEP_BUCKETS,
        )
        self.allreduce_bytes = self._one(
            Counter, "mpinet_allreduce_bytes", "Bytes this rank passed to allreduce"
        )
        self.wait = self._one(
            Counter,
            "mpinet_collective_wait_seconds",
            "Seconds this rank spent inside collectives (the slow rank waits least)",
        )
        self.lr = self._unset("mpinet_learning_rate", "Learning rate of the last step")
        self.epoch = self._one(
            Gauge, "mpinet_epoch", "Completed epochs, a fraction: step / steps per epoch"
        )
        self.step = self._one(Gauge, "mpinet_step", "Optimizer steps completed")

    def _define_evaluations(self):
        accuracy = self._per_unset(
            "mpinet_eval_accuracy", "Accuracy at the last evaluation", "split", SPLITS
        )
        loss = self._per_unset("mpinet_eval_loss", "Loss at the last evaluation", "split", SPLITS)
        self.eval = {s: (accuracy[s], loss[s]) for s in SPLITS}
        self.checkpoint_seconds = self._one(
            Histogram,
            "mpinet_checkpoint_duration_seconds",
            "Time to write one checkpoint (rank 0 writes them)",
            buckets=CHECKPOINT_BUCKETS,
        )
        self.last_checkpoint = self._unset(
            "mpinet_last_checkpoint_timestamp_seconds",
            "Unix time of the last successful checkpoint",
        )

    def _define_run(self, cfg, comm):
        self.world = self._one(Gauge, "mpinet_world_size", "Number of ranks in the job")
        self.start = self._one(
            Gauge, "mpinet_start_timestamp_seconds", "Unix time this rank started training"
        )
        # Before the first step it holds the start time, so "no step for 10 minutes" also
        # catches a job stuck before its first step.
        self.last_step = self._one(
            Gauge,
            "mpinet_last_step_timestamp_seconds",
            "Unix time of the last completed step (liveness); the start before",
        )
        info = Info(
            "mpinet_run",
            "The run: version, model, optimizer, world size",
            self._names,
            registry=self.registry,
        )
        info.labels(*self._values).info(
            {
                "version": package_version(),
                "model": cfg.model.name,
                "optimizer": cfg.optim.name,
                "world_size": str(comm.world_size),
            }
        )
        self.world.set(comm.world_size)
        self.start.set(self.started)
        self.last_step.set(self.started)

    def _serve(self, host, port):
        try:
            server, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as e:
            raise OSError(
                f"metrics: cannot serve on {host}:{port} ({e.strerror}); set "
                f"metrics.port to a free base port, 0 for any, or -1 for off"
            ) from None
        self.port = server.server_port
        shown = socket.gethostname() if host in ("", "0.0.0.0", "::") else host
        self.url = f"http://{shown}:{self.port}/metrics"  # rank 0 logs every rank's (INFO)
        return server

    def observe_step(self, step, epoch, loss, samples, times, lr):
        if not self.enabled:
            return
        self.loss.set(loss)
        self.samples.inc(samples)
        self.steps.inc()
        for phase, seconds in times.items():
            self.phase[phase].observe(seconds)
        self.step_seconds.observe(sum(times.values()))
        stats = self.comm.stats  # cumulative: add what is new since the last step
        self.allreduce_bytes.inc(stats.allreduce_bytes - self._seen_bytes)
        self.wait.inc(stats.wait_seconds - self._seen_wait)
        self._seen_bytes, self._seen_wait = stats.allreduce_bytes, stats.wait_seconds
        self.lr.set(lr)
        self.epoch.set(epoch)
        self.step.set(step)
        self.last_step.set(time.time())

    def observe_eval(self, row):
        if not self.enabled:
            return
        self.accuracy.set(row["train_accuracy"])
        for split in SPLITS:
            acc, loss = self.eval[split]
            acc.set(row[f"{split}_accuracy"])
            loss.set(row[f"{split}_loss"])

    def observe_checkpoint(self, seconds):
        """A checkpoint was written successfully in `seconds` (call it where it was written)."""
        if not self.enabled:
            return
        self.checkpoint_seconds.observe(seconds)
        self.last_checkpoint.set(time.time())

    def close(self, summary, run_dir=None):
        """Stop serving; rank 0 pushes the summary when metrics.pushgateway is set (and there
        is one: None for a resumed run that was already complete).

        The push is grouped by job and run id (the run directory's name), so runs of one
        job do not overwrite each other. A failed push is a warning: the run itself is done.
        """
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.pushgateway and self.comm.is_root and summary is not None:
            run_id = (
                Path(run_dir).name
                if run_dir
                else time.strftime("%Y%m%d-%H%M%S", time.localtime(self.started))
            )
            try:
                push_summary(self.pushgateway, self.job, run_id, summary)
            except OSError as e:
                log.warning("metrics: could not push the summary to %s (%s)", self.pushgateway, e)


class Unset:
    """A labelled gauge whose sample appears only once it is set (prometheus-client makes a
    child, with value 0, as soon as .labels() is called)."""

    def __init__(self, metric, label_values):
        self.metric, self.label_values, self.child = metric, label_values, None

    def set(self, value):
        if self.child is None:
            self.child = self.metric.labels(*self.label_values)
        self.child.set(value)


def metric_names(registry):
    """Every sample name a registry exposes (with _total, _bucket, _count, _sum, _info)."""
    families = list(registry.collect())
    # A gauge that has no value yet (Unset) has no sample, but it is exported all the same.
    return {sample.name for family in families for sample in family.samples} | {
        family.name for family in families if family.type == "gauge"
    }
