"""The four figures of a run as matplotlib Figures; worker/plots.py reads the run and saves them.

Each function returns the Figure unsaved, so the tests can read the texts drawn on it.
matplotlib's object API (Figure, no pyplot) needs no display and keeps no global state.
"""

import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

MANY = 40  # with more evaluations than this, markers would merge into a thick line: none
GRID_ROWS = 6  # rows of misclassified images at most
ACCURACY_TICKS = (0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999)
SHORT_NAME = 3  # class names up to this long (digits) fit 6 panels a row


def title(model, dataset, run_name):
    """What every figure is about, e.g. "simple_cnn on mnist — run 20261201-2040"."""
    return f"{model} on {dataset} — run {run_name}"


def loss_figure(history, steps, heading):
    """Train loss per logged step (steps.jsonl; per evaluation without it), test loss per
    evaluation. Log scale: the loss falls by orders of magnitude and the end is what matters."""
    fig, ax = _curve_axes(heading, "cross-entropy loss")
    if steps:
        every = steps[1]["step"] - steps[0]["step"] if len(steps) > 1 else steps[0]["step"]
        _train_line(ax, steps, "train_loss", f"train (mean of each {every} steps)")
    else:
        _train_line(ax, history, "train_loss", "train (since the previous evaluation)")
    _test_line(ax, history, "test_loss", f"test (final {history[-1]['test_loss']:.4f})")
    _loss_scale(ax)
    _finish(ax, history)
    return fig


def _loss_scale(ax):
    """Log scale, ticks as plain decimals (0.2, not 2×10⁻¹): 1, 2, 5 a decade over a long
    run's decades, 1 to 9 a decade for a short run (else 2 ticks at most)."""
    values = np.concatenate([line.get_ydata() for line in ax.get_lines()])
    ax.set_yscale("log")
    wide = values.max() / values.min() > 10
    ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5) if wide else range(1, 10)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    low, high = values.min(), values.max()
    if high / low < 2:  # a few close points: span a factor 2, or no tick would fall inside
        middle = math.sqrt(low * high)
        ax.set_ylim(middle / math.sqrt(2), middle * math.sqrt(2))


def accuracy_figure(history, heading):
    """Train accuracy (over the steps since the previous evaluation) and test accuracy, per
    evaluation: the loop measures accuracy at evaluations only."""
    fig, ax = _curve_axes(heading, "accuracy")
    _train_line(ax, history, "train_accuracy", "train (since the previous evaluation)")
    final = history[-1]["test_accuracy"]
    _test_line(ax, history, "test_accuracy", f"test (final {final:.2%})")
    _accuracy_scale(ax, [r[k] for r in history for k in ("train_accuracy", "test_accuracy")])
    _finish(ax, history)
    return fig


def _accuracy_scale(ax, values):
    """Logit scale: 30% → 90% and 97% → 99% both get room, as error rates fall by factors."""
    ax.set_yscale("logit", nonpositive="clip")  # 100% drawn at the edge, not dropped
    ax.yaxis.set_major_locator(FixedLocator(ACCURACY_TICKS))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:g}%"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(*_logit_limits(values))


def _logit_limits(values, least=2.0):
    """y limits spanning at least `least` in logit units, so that 2 or 3 of ACCURACY_TICKS
    show even when every accuracy is within a point of the others (one evaluation)."""
    z = np.log(np.clip(values, 1e-4, 1 - 1e-4) / (1 - np.clip(values, 1e-4, 1 - 1e-4)))
    middle, half = (z.max() + z.min()) / 2, max(least, 1.1 * (z.max() - z.min())) / 2
    return 1 / (1 + np.exp(-(middle - half))), 1 / (1 + np.exp(-(middle + half)))


def _curve_axes(heading, ylabel):
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.set(xlabel="step", ylabel=ylabel, title=heading)
    return fig, ax


def _train_line(ax, rows, key, label):
    # markers only where the points are few: one or two points must still be seen
    marker = "o" if len(rows) <= MANY else None
    ax.plot(
        [r["step"] for r in rows],
        [r[key] for r in rows],
        marker=marker,
        markersize=3,
        linewidth=1,
        color="tab:blue",
        label=label,
    )


def _test_line(ax, history, key, label):
    marker = "o" if len(history) <= MANY else None
    ax.plot(
        [r["step"] for r in history],
        [r[key] for r in history],
        marker=marker,
        markersize=5,
        linewidth=1.5,
        color="tab:orange",
        label=label,
    )


def _finish(ax, history):
    # from step 0: a short run is seen as short, and one evaluation is not a lone centred dot
    ax.set_xlim(0, 1.03 * max(line.get_xdata().max() for line in ax.get_lines()))
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    per_epoch = steps_per_epoch(history)
    if per_epoch:  # epochs on top: the step count alone hides how far through the data it got
        top = ax.secondary_xaxis(
            "top", functions=(lambda s: s / per_epoch, lambda e: e * per_epoch)
        )
        top.set_xlabel("epoch")


def steps_per_epoch(history):
    """From the latest evaluation (history's epoch is rounded: the most steps, the least
    error); None before any epoch progress."""
    last = max(history, key=lambda r: r["step"])
    return round(last["step"] / last["epoch"]) if last["epoch"] > 0 else None


def confusion_figure(t, y, names, heading):
    """Counts of (true, predicted): the diagonal is right, the rest shows what is confused."""
    classes = len(names)
    t, y = np.asarray(t, np.int64), np.asarray(y, np.int64)  # uint8 labels would wrap at 256
    counts = np.bincount(t * classes + y, minlength=classes * classes).reshape(classes, classes)
    fig = Figure(figsize=(7.5, 6.8), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, shrink=0.8, label="test images")
    for i in range(classes):
        for j in range(classes):
            dark = counts[i, j] > counts.max() / 2
            ax.text(
                j,
                i,
                str(counts[i, j]),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if dark else "black",
            )
    long_names = max(map(len, names)) > SHORT_NAME
    ax.set_xticks(
        range(classes),
        names,
        rotation=40 if long_names else 0,
        ha="right" if long_names else "center",
        rotation_mode="anchor",
    )
    ax.set_yticks(range(classes), names)
    right = int(np.count_nonzero(t == y))
    ax.set(
        xlabel="predicted",
        ylabel="true",
        title=f"{heading}\nconfusion matrix: accuracy {right / len(t):.2%} "
        f"({right} of {len(t)} test images)",
    )
    return fig


def misclassified_figure(predictions, names, heading):
    """The most confident mistakes first (often mislabelled or truly ambiguous images), each
    panel titled "true → predicted (probability)"."""
    t, y, p = predictions.t, predictions.y, predictions.p
    cols, width, height = panel_grid(names)
    wrong = np.flatnonzero(t != y)
    shown = wrong[np.argsort(-p[wrong], kind="stable")][: GRID_ROWS * cols]
    rows = max(1, math.ceil(len(shown) / cols))
    fig = Figure(figsize=(width, 1.1 + rows * height), layout="constrained")
    fig.suptitle(
        f"{heading}\n{len(wrong)} of {len(t)} test images misclassified, the most "
        f"confident first\ntrue → predicted (probability)"
    )
    if not len(shown):
        fig.text(0.5, 0.4, "no misclassified test images", ha="center")
    for k, i in enumerate(shown):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.imshow(predictions.images[i], cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(panel_title(names[t[i]], names[y[i]], p[i]), fontsize=9)
        ax.axis("off")
    return fig


def panel_grid(names):
    """(columns, figure width, row height) in inches: a panel must be as wide as its title,
    "T-shirt/top → Ankle boot (0.97)" takes ~2 inches where "7 → 2 (0.91)" takes 0.8."""
    if max(map(len, names)) <= SHORT_NAME:
        return 6, 7.5, 1.45
    return 5, 10.5, 1.7


def panel_title(true_name, predicted_name, probability):
    """e.g. "7 → 2 (0.91)" or "Shirt → T-shirt/top (0.62)"."""
    return f"{true_name} → {predicted_name} ({probability:.2f})"


def search_figure(trials, space):
    """`mpinet search`: the score against each hyper-parameter (log axis for log_uniform)."""
    fig = Figure(figsize=(4 * len(space), 3.4), layout="constrained")
    ok = [t for t in trials if t["status"] == "ok"]
    for i, (key, (kind, _)) in enumerate(sorted(space.items())):
        ax = fig.add_subplot(1, len(space), i + 1)
        values = [t["values"][key] for t in ok]
        if kind == "choice":
            labels = sorted({str(v) for v in values})
            values = [labels.index(str(v)) for v in values]
            ax.set_xticks(range(len(labels)), labels)
        ax.scatter(values, [t["score"] for t in ok])
        if kind == "log_uniform":
            ax.set_xscale("log")
        ax.set(xlabel=key, ylabel="score (accuracy)" if i == 0 else None)
        ax.grid(alpha=0.3)
    fig.suptitle(f"random search: {len(ok)} trial(s)")
    return fig
