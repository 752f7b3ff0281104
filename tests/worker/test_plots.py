"""Plots: what write_plots draws from a run directory and the end of training's predictions.

The figures are read back as matplotlib objects (titles, tick labels, line data), not as
pixels; tests/worker/test_plots_command.py runs `mpinet plot` on a real trained run.
"""

import json
import logging
import re

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from mpinet.data import class_names
from mpinet.worker import figures, plots

PNG = b"\x89PNG\r\n\x1a\n"
FASHION = class_names("fashion-mnist")
PANEL = re.compile(r"^(.+) → (.+) \((\d\.\d\d)\)$")


def make_run(
    root,
    name="20261201-2040",
    dataset="mnist",
    model="simple_cnn",
    evaluations=3,
    log_every=10,
    per_epoch=600,
):
    """A run directory as `mpinet train` leaves it: config.toml, history.jsonl (an evaluation
    every 100 steps), steps.jsonl (log_every=0: none, as in runs from before it existed).
    The data file does not exist."""
    run = root / name
    run.mkdir(parents=True)
    (run / "config.toml").write_text(
        f'[data]\npath = "{root / "absent.h5"}"\ndataset = "{dataset}"\nnormalize = "unit"\n'
        f'[model]\nname = "{model}"\ndtype = "float32"\n'
    )
    every = 100
    rows = [
        {
            "epoch": round(every * k / per_epoch, 4),
            "step": every * k,
            "train_loss": 1 / k,
            "test_loss": 1.1 / k,
            "train_accuracy": 1 - 0.1 / k,
            "test_accuracy": 1 - 0.12 / k,
            "lr": 0.001,
            "samples_per_second": 5000.0,
            "elapsed_seconds": 2.0 * k,
            "test_samples": 10000,
        }
        for k in range(1, evaluations + 1)
    ]
    write_jsonl(run / "history.jsonl", rows)
    if log_every:
        write_jsonl(
            run / "steps.jsonl",
            [
                {"step": s, "epoch": s / per_epoch, "train_loss": 2.0 / (1 + s / 50), "lr": 0.001}
                for s in range(log_every, every * evaluations + 1, log_every)
            ],
        )
    return run


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def make_predictions(n=200, wrong=40, seed=0):
    """n test images, the first `wrong` of them misclassified (as label + 1)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) % 10
    y = t.copy()
    y[:wrong] = (t[:wrong] + 1) % 10
    p = rng.uniform(0.3, 1.0, n)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    return plots.Predictions(t, y, p, images)


def titles_of(fig):
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def test_the_end_of_a_run_draws_four_pngs_from_its_predictions_without_a_network(
    tmp_path, monkeypatch, caplog
):
    run = make_run(tmp_path)
    monkeypatch.setattr(plots, "predict", lambda *a: pytest.fail("re-predicted the test set"))
    with caplog.at_level(logging.INFO, logger="mpinet.worker"):
        written, skipped = plots.write_plots(run, predictions=make_predictions())
    assert skipped == {}
    assert [p.name for p in written] == [*plots.CURVES, *plots.PREDICTIONS]
    for path in written:
        assert path.read_bytes()[:8] == PNG, path
        assert path.stat().st_size > 10_000, path
    assert not list(run.glob("*.tmp"))
    assert (
        f"plots: loss.png, accuracy.png, confusion.png, misclassified.png in {run}"
        in caplog.messages
    )


def test_every_title_names_the_model_the_dataset_and_the_run(tmp_path):
    run = make_run(tmp_path, name="20261201-2040", dataset="fashion-mnist", model="deep_cnn")
    drawn, _ = plots.draw(run, make_predictions())
    for name, fig in drawn.items():
        heading = [fig.get_suptitle(), *titles_of(fig)]
        assert any("deep_cnn on fashion-mnist — run 20261201-2040" in h for h in heading), name


def test_the_loss_curve_has_a_point_per_logged_step_and_per_evaluation(tmp_path):
    run = make_run(tmp_path, evaluations=2, log_every=10)
    fig = plots.draw(run)[0]["loss.png"]
    train, test = fig.axes[0].get_lines()
    steps = [json.loads(line)["step"] for line in (run / "steps.jsonl").read_text().splitlines()]
    assert list(train.get_xdata()) == steps and len(steps) == 20
    assert list(test.get_xdata()) == [100, 200]
    assert train.get_label() == "train (mean of each 10 steps)"
    assert fig.axes[0].get_xlabel() == "step"
    assert fig.axes[0].child_axes[0].get_xlabel() == "epoch"  # the secondary axis on top


def test_without_steps_jsonl_the_train_curve_comes_from_the_history(tmp_path):
    """Runs from before steps.jsonl existed still plot."""
    run = make_run(tmp_path, evaluations=4, log_every=0)
    fig = plots.draw(run)[0]["loss.png"]
    train, test = fig.axes[0].get_lines()
    assert list(train.get_xdata()) == list(test.get_xdata()) == [100, 200, 300, 400]
    assert "since the previous evaluation" in train.get_label()


@pytest.mark.parametrize("evaluations, log_every", [(1, 50), (2, 10), (200, 10)])
def test_curves_are_readable_with_one_evaluation_or_two_hundred(tmp_path, evaluations, log_every):
    """(1, 50): three loss values within a factor 1.7, where a log axis shows no tick."""
    run = make_run(tmp_path, evaluations=evaluations, log_every=log_every)
    drawn, _ = plots.draw(run)
    for name in plots.CURVES:
        ax = drawn[name].axes[0]
        assert ax.get_xlim()[0] == 0  # a short run is seen as short
        test = ax.get_lines()[-1]
        # one point must be seen (a marker); 200 markers would merge into a thick line
        assert (test.get_marker() == "o") == (evaluations <= figures.MANY), name
        FigureCanvasAgg(drawn[name]).draw()
        low, high = ax.get_ylim()
        labels = [
            tick.get_text()
            for tick in ax.get_yticklabels()
            if low <= tick.get_position()[1] <= high and tick.get_text()
        ]
        assert len(labels) >= 2, (name, low, high, labels)


def test_fashion_mnist_names_its_classes_in_the_confusion_matrix(tmp_path):
    run = make_run(tmp_path, dataset="fashion-mnist")
    predictions = make_predictions(n=400, wrong=100)
    ax = plots.draw(run, predictions)[0]["confusion.png"].axes[0]
    assert [label.get_text() for label in ax.get_xticklabels()] == FASHION
    assert [label.get_text() for label in ax.get_yticklabels()] == FASHION
    assert all(label.get_rotation() == 40 for label in ax.get_xticklabels())
    assert "accuracy 75.00% (300 of 400 test images)" in ax.get_title()
    counts = [int(text.get_text()) for text in ax.texts]
    assert len(counts) == 100 and sum(counts) == 400


def test_mnist_keeps_digits_on_its_ticks(tmp_path):
    ax = plots.draw(make_run(tmp_path), make_predictions())[0]["confusion.png"].axes[0]
    assert [label.get_text() for label in ax.get_xticklabels()] == [str(d) for d in range(10)]
    assert all(label.get_rotation() == 0 for label in ax.get_xticklabels())


def test_misclassified_panels_say_true_arrow_predicted_and_probability(tmp_path):
    t = np.array([7, 6, 1, 3])
    y = np.array([2, 0, 1, 3])
    p = np.array([0.906, 0.62, 0.99, 0.8])
    images = np.zeros((4, 28, 28), np.uint8)
    predictions = plots.Predictions(t, y, p, images)
    mnist = plots.draw(make_run(tmp_path / "a"), predictions)[0]["misclassified.png"]
    fashion = plots.draw(make_run(tmp_path / "b", dataset="fashion-mnist"), predictions)[0][
        "misclassified.png"
    ]
    assert titles_of(mnist) == ["7 → 2 (0.91)", "6 → 0 (0.62)"]  # most confident first
    assert titles_of(fashion) == ["Sneaker → Pullover (0.91)", "Shirt → T-shirt/top (0.62)"]
    assert "2 of 4 test images misclassified" in mnist.get_suptitle()


def test_misclassified_panels_are_the_most_confident_mistakes(tmp_path):
    predictions = make_predictions(n=500, wrong=120)
    fig = plots.draw(make_run(tmp_path), predictions)[0]["misclassified.png"]
    shown = [float(PANEL.match(title)[3]) for title in titles_of(fig)]
    wrong = np.sort(predictions.p[predictions.t != predictions.y])[::-1]
    assert len(shown) == figures.GRID_ROWS * 6
    assert shown == [round(v, 2) for v in wrong[: len(shown)]]


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_no_title_overlaps_another_or_leaves_the_figure(tmp_path, dataset):
    """The widest panel titles the data set can have, on every panel."""
    names = class_names(dataset)
    widest = max(range(10), key=lambda k: len(names[k]))
    other = max((k for k in range(10) if k != widest), key=lambda k: len(names[k]))
    n = 60
    predictions = plots.Predictions(
        np.full(n, widest), np.full(n, other), np.full(n, 1.0), np.zeros((n, 28, 28), np.uint8)
    )
    fig = plots.draw(make_run(tmp_path, dataset=dataset), predictions)[0]["misclassified.png"]
    FigureCanvasAgg(fig).draw()
    boxes = [ax.title.get_window_extent() for ax in fig.axes]
    boxes += [text.get_window_extent() for text in fig.texts]  # the suptitle
    for i, box in enumerate(boxes):
        assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1, f"title {i} leaves the figure"
        for other_box in boxes[i + 1 :]:
            assert not box.overlaps(other_box), f"title {i} overlaps another"


def test_without_predictions_or_a_checkpoint_the_prediction_plots_are_skipped_and_said(
    tmp_path, caplog
):
    run = make_run(tmp_path)
    with caplog.at_level(logging.INFO, logger="mpinet.worker"):
        written, skipped = plots.write_plots(run)
    assert [p.name for p in written] == list(plots.CURVES)
    reason = skipped["confusion.png, misclassified.png"]
    assert reason.startswith(f"{run / 'checkpoints'}: no checkpoint; expected ckpt-*.h5")
    assert f"plots: skipped confusion.png, misclassified.png: {reason}" in caplog.messages


def test_checkpoint_for_resolves_as_every_command_does(tmp_path):
    """The given file (or pointer), else the run's `latest`, else its newest valid step."""
    from checkpoint_support import trained

    from mpinet.model.checkpoint import save

    with pytest.raises(FileNotFoundError, match=r"no checkpoint; expected ckpt-\*\.h5"):
        plots.checkpoint_for(tmp_path)
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    net, opt = trained({"name": "mlp", "hidden": [8]})
    for step in (200, 300, 100):
        save(folder / f"ckpt-{step:08d}.h5", net, opt, {"step": step})
    assert plots.checkpoint_for(tmp_path).name == "ckpt-00000300.h5"  # the newest step
    (folder / "latest").write_text("ckpt-00000100.h5\n")
    assert plots.checkpoint_for(tmp_path).name == "ckpt-00000100.h5"  # latest wins
    chosen = plots.checkpoint_for(tmp_path, folder / "ckpt-00000200.h5")
    assert chosen == folder / "ckpt-00000200.h5"
    assert plots.checkpoint_for(tmp_path, folder / "latest").name == "ckpt-00000100.h5"


def test_from_scores_gives_the_argmax_and_its_softmax_probability():
    scores = np.array([[0.0, 2.0, 0.0], [1000.0, 0.0, 0.0]])  # 1000: exp must not overflow
    out = plots.from_scores([1, 2], scores, np.zeros((2, 28, 28), np.uint8))
    assert out.y.tolist() == [1, 0]
    np.testing.assert_allclose(out.p, [np.e**2 / (np.e**2 + 2), 1.0], rtol=1e-12)


def test_the_ranks_parts_concatenate_in_rank_order():
    whole = make_predictions(n=30)
    parts = [
        plots.Predictions(*(getattr(whole, k)[a:b] for k in ("t", "y", "p", "images")))
        for a, b in ((0, 10), (10, 20), (20, 30))
    ]
    joined = plots.concatenate(parts)
    for k in ("t", "y", "p", "images"):
        np.testing.assert_array_equal(getattr(joined, k), getattr(whole, k))


def test_predictions_of_the_wrong_shape_are_a_one_line_error():
    with pytest.raises(
        ValueError,
        match=r"^Predictions.images: shape \(3, 784\); expected "
        r"\(3, 28, 28\)",
    ) as e:
        plots.Predictions(np.zeros(3, int), np.zeros(3, int), np.zeros(3), np.zeros((3, 784)))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("t", np.zeros(3), "Predictions.t: dtype float64; expected integer labels"),
        ("images", np.zeros((3, 28, 28)), "Predictions.images: dtype float64; expected uint8"),
    ],
    ids=["float-labels", "normalised-images"],
)
def test_scores_for_labels_or_normalised_images_are_a_one_line_error(field, value, message):
    fields = {
        "t": np.zeros(3, int),
        "y": np.zeros(3, int),
        "p": np.zeros(3),
        "images": np.zeros((3, 28, 28), np.uint8),
        field: value,
    }
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        plots.Predictions(**fields)


def test_a_network_instead_of_predictions_is_a_clear_error(tmp_path):
    with pytest.raises(TypeError, match="predictions is a object; expected"):
        plots.write_plots(make_run(tmp_path), predictions=object())


@pytest.mark.parametrize("line", ['{"step": 1}', "not json"], ids=["missing-keys", "not-json"])
def test_a_damaged_history_is_a_one_line_error_not_a_key_error(tmp_path, line):
    run = make_run(tmp_path)
    (run / "history.jsonl").write_text(line + "\n")
    expected = {
        "missing-keys": r"history.jsonl: object 1 lacks epoch, train_loss, .*; "
        r"expected epoch, step, train_loss",
        "not-json": r"history.jsonl: line 1 is 'not json'; expected one JSON object "
        r"per line",
    }[("not-json" if line == "not json" else "missing-keys")]
    with pytest.raises(ValueError, match=expected) as e:
        plots.write_plots(run)
    assert "\n" not in str(e.value)


def test_a_directory_without_config_is_a_one_line_error(tmp_path):
    run = make_run(tmp_path)
    (run / "config.toml").unlink()
    with pytest.raises(FileNotFoundError, match="no config.toml; expected a run directory"):
        plots.write_plots(run)
