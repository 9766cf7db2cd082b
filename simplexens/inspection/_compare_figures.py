"""Figures of the ``simplexens compare`` report: reliability, metric against shift, cost.

matplotlib is imported here only (through :class:`matplotlib.figure.Figure`, never pyplot: no
backend is chosen and no global state is touched).
"""

from __future__ import annotations

from .reliability import ReliabilityDisplay


def _figure(n_panels=1, size=(5, 4)):
    from matplotlib.figure import Figure  # no pyplot: no backend, no global state

    fig = Figure(figsize=(size[0] * n_panels, size[1]), layout="constrained")
    return fig, fig.subplots(1, n_panels, squeeze=False)[0]


def plot_reliability(path, reliability, y):
    from matplotlib.figure import Figure

    n = len(reliability)
    cols = min(4, n)
    rows = -(-n // cols)
    # No constrained layout: the Display carves its histogram out of each axes itself.
    fig = Figure(figsize=(4 * cols, 5 * rows))
    fig.subplots_adjust(left=0.05, right=0.98, top=0.97, bottom=0.06, wspace=0.3, hspace=0.35)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (method, (proba, classes)) in zip(axes[:n], reliability.items(), strict=True):
        ReliabilityDisplay.from_predictions(y, proba, labels=classes, name=method, ax=ax)
    for ax in axes[n:]:
        ax.set_axis_off()
    fig.savefig(path, dpi=80)


def plot_shift(path, table, methods, severities):
    fig, (ax_nll, ax_acc) = _figure(2)
    for method in methods:
        for ax, metric in ((ax_nll, "nll"), (ax_acc, "accuracy")):
            keys = [metric, *(f"shift_{metric}_{s}" for s in severities)]
            means = [table[method][k]["mean"] for k in keys]
            sds = [table[method][k]["sd"] for k in keys]
            ax.errorbar([0, *severities], means, yerr=sds, marker="o", capsize=2, label=method)
    ax_nll.set(xlabel="shift severity (0 = clean)", ylabel="NLL (lower is better)")
    ax_acc.set(xlabel="shift severity (0 = clean)", ylabel="accuracy (higher is better)")
    ax_nll.legend(fontsize="small")
    fig.savefig(path, dpi=80)


def plot_cost(path, table, methods):
    fig, (ax,) = _figure(1, (6, 4.5))
    for method in methods:
        x, y = table[method]["epochs_spent"]["mean"], table[method]["nll"]
        ax.errorbar(x, y["mean"], yerr=y["sd"], marker="o", capsize=2, label=method)
        ax.annotate(
            method, (x, y["mean"]), textcoords="offset points", xytext=(4, 4), fontsize="small"
        )
    ax.set(
        xlabel="epochs_spent_ (passes over the training data)",
        ylabel="clean test NLL (lower is better)",
    )
    fig.savefig(path, dpi=80)
