"""Push a run's final summary to a Prometheus Pushgateway (for batch-job monitoring).

A finished job has no endpoint left to scrape, so its outcome goes to the Pushgateway, which
Prometheus scrapes instead. push-add (HTTP POST) replaces only these metric names within
the group {job, run}, so each run keeps its own numbers and a rerun never mixes with another.
"""

import time

from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway

# summary.json key -> (metric name, help). Keys missing from a summary (or None) are skipped.
SUMMARY_METRICS = {
    "final_test_accuracy": ("mpinet_summary_test_accuracy", "Test accuracy at the end of the run"),
    "best_test_accuracy": (
        "mpinet_summary_best_test_accuracy",
        "Best test accuracy of any evaluation of the run",
    ),
    "final_test_loss": ("mpinet_summary_test_loss", "Test loss at the end of the run"),
    "final_train_loss": (
        "mpinet_summary_train_loss",
        "Training loss over the last evaluation interval",
    ),
    "samples_per_second": (
        "mpinet_summary_samples_per_second",
        "Mean training throughput of the job, samples per second",
    ),
    "steps": ("mpinet_summary_steps", "Optimizer steps the run completed"),
    "epochs": ("mpinet_summary_epochs", "Epochs the run completed"),
    "wall_seconds": ("mpinet_summary_duration_seconds", "Wall time of the training, seconds"),
    "world_size": ("mpinet_summary_world_size", "Number of ranks of the run"),
}
COMPLETION = (
    "mpinet_summary_completion_timestamp_seconds",
    "Unix time the run finished (alert when it is too old)",
)
TIMEOUT_SECONDS = 10  # a slow gateway must not hold the end of a finished run for long


def summary_registry(summary):
    """A registry holding the summary's numbers as gauges, plus the completion time."""
    registry = CollectorRegistry()
    for key, (name, doc) in SUMMARY_METRICS.items():
        value = summary.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            Gauge(name, doc, registry=registry).set(value)
    Gauge(*COMPLETION, registry=registry).set(time.time())
    return registry


def push_summary(url, job, run_id, summary):
    """push-add the summary to the Pushgateway at `url`, grouped by job and run id.

    Raises OSError when the gateway cannot be reached or refuses the push.
    """
    pushadd_to_gateway(
        url,
        job=job,
        registry=summary_registry(summary),
        grouping_key={"run": run_id},
        timeout=TIMEOUT_SECONDS,
    )
