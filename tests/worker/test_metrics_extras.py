"""Metrics beyond the step: checkpoints, liveness before the first step, the summary push
registry, and JSON-lines logs."""

import json
import logging
import time
import urllib.request

from mpinet.cluster import local
from mpinet.worker.config import load_config
from mpinet.worker.log import JsonLinesFormatter, setup_logging
from mpinet.worker.metrics import Metrics, metric_names
from mpinet.worker.push import summary_registry


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def value(text, name):
    for line in text.splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_checkpoints_and_liveness_are_exported():
    before = time.time()
    metrics = Metrics(load_config(None, ["metrics.port=0"]), local())
    try:
        text = scrape(metrics.port)
        # before any step: liveness holds the start, no checkpoint yet
        assert before <= value(text, "mpinet_last_step_timestamp_seconds") <= time.time()
        assert value(text, "mpinet_start_timestamp_seconds") >= before
        assert value(text, "mpinet_last_checkpoint_timestamp_seconds") is None  # absent
        metrics.observe_checkpoint(0.42)
        text = scrape(metrics.port)
    finally:
        metrics.close({})
    assert value(text, "mpinet_checkpoint_duration_seconds_count") == 1
    assert value(text, "mpinet_checkpoint_duration_seconds_sum") == 0.42
    assert value(text, "mpinet_last_checkpoint_timestamp_seconds") >= before


def test_every_metric_has_help_and_the_naming_rules():
    metrics = Metrics(load_config(None, ["metrics.port=0"]), local())
    try:
        families = list(metrics.registry.collect())
    finally:
        metrics.close({})
    for family in families:
        assert family.name.startswith("mpinet_") and family.documentation, family.name
        if family.type == "counter":
            assert family.samples[0].name.endswith("_total"), family.name
        for sample in family.samples:
            assert {"rank", "job"} <= set(sample.labels), sample.name
            assert not {"step", "epoch"} & set(sample.labels), sample.name


def test_off_means_no_server_and_no_calls_fail():
    metrics = Metrics(load_config(), local())
    metrics.observe_step(1, 0, 1.0, 10, {"data": 0.0}, 0.1)
    metrics.observe_checkpoint(1.0)
    metrics.close({})
    assert metrics.port is None


def test_the_summary_registry_skips_missing_values():
    names = metric_names(
        summary_registry(
            {"final_test_accuracy": 0.9, "final_test_loss": None, "steps": 10, "unknown": 3}
        )
    )
    assert names == {
        "mpinet_summary_test_accuracy",
        "mpinet_summary_steps",
        "mpinet_summary_completion_timestamp_seconds",
    }


def test_json_lines_logs_one_object_per_record(capsys):
    logger = setup_logging(rank=1, world_size=4, all_ranks=True, json_lines=True)
    try:
        logging.getLogger("mpinet.worker").info("step=%d loss=%.2f", 5, 0.25)
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("mpinet.worker").exception("failed")
    finally:
        setup_logging()
    lines = capsys.readouterr().err.strip().splitlines()
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "step=5 loss=0.25"
    assert (first["rank"], first["world_size"], first["level"]) == (1, 4, "INFO")
    assert first["time"].endswith("Z") and first["logger"] == "mpinet.worker"
    assert "ValueError: boom" in second["exception"]
    assert isinstance(logger.handlers[0].formatter, logging.Formatter)


def test_the_json_formatter_keeps_unicode_and_quotes_valid():
    record = logging.LogRecord("mpinet", logging.WARNING, __file__, 1, 'a "quote" ✓', (), None)
    event = json.loads(JsonLinesFormatter(0, 1).format(record))
    assert event["message"] == 'a "quote" ✓'
