"""The report of :func:`simplexens.compare.compare`: summaries, verdicts and ``report.md``."""

from __future__ import annotations

import json

import numpy as np

from ..inspection._compare_figures import plot_cost, plot_reliability, plot_shift
from ._protocol import CONTROL, GROWN, OOD_SCORES, SEVERITIES, Budget

# --------------------------------------------------------------------------- summaries

# (key, header, higher is better)
CLEAN_COLUMNS = (
    ("accuracy", "accuracy", True),
    ("nll", "NLL", False),
    ("brier", "Brier", False),
    ("ece", "ECE", False),
    ("adaptive_ece", "adaptive ECE", False),
    ("aurc", "AURC", False),
    ("epochs_spent", "epochs_spent_", False),
    ("fit_seconds", "fit s", False),
)
OOD_COLUMNS = tuple((f"ood_auroc_{s}", f"AUROC {s}", True) for s in OOD_SCORES)
OOD_DETAIL_COLUMNS = tuple(
    column
    for s in OOD_SCORES
    for column in (
        (f"ood_aupr_{s}", f"AUPR {s}", True),
        (f"ood_fpr_at_95_tpr_{s}", f"FPR@95 {s}", False),
    )
)


def _shift_columns(metric):
    higher = metric == "accuracy"
    clean = (metric, "clean", higher)
    return (
        clean,
        *((f"shift_{metric}_{s}", f"severity {s}", higher) for s in SEVERITIES),
        (f"shift_{metric}_mean", "mean 1-5", higher),
    )


def _numeric_keys(records):
    return [k for k, v in records[0].items() if isinstance(v, (int, float)) and k != "seed"]


def summarise(records, methods):
    table = {}
    for method in methods:
        rows = [r for r in records if r["method"] == method]
        table[method] = {}
        for key in _numeric_keys(records):
            values = np.array([r[key] for r in rows], dtype=float)
            sd = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            table[method][key] = {"mean": float(values.mean()), "sd": sd}
    return table


def judge(a, b, key, higher, seeds):
    """``a`` (method) against ``b`` (reference) on ``key``: a phrase."""
    diff = a[key]["mean"] - b[key]["mean"]
    better = diff > 0 if higher else diff < 0
    if diff == 0:
        return f"{a[key]['mean']:.4f} for both: equal"
    text = f"{a[key]['mean']:.4f} vs {b[key]['mean']:.4f} ({diff:+.4f})"
    if seeds == 1:
        return f"{text}: {'better' if better else 'worse'} (single seed: no noise estimate)"
    pooled = np.sqrt((a[key]["sd"] ** 2 + b[key]["sd"] ** 2) / 2)
    if abs(diff) < pooled:
        return f"{text}: within seed noise (pooled sd {pooled:.4f})"
    return f"{text}: {'better' if better else 'worse'} (pooled sd {pooled:.4f})"


_VERDICT_KEYS = (
    ("nll", "NLL", False),
    ("shift_nll_mean", "NLL under shift", False),
    ("ood_auroc_entropy", "OOD AUROC (entropy)", True),
)


def verdicts(table, methods, seeds):
    lines = []
    for method in methods:
        references = [] if method == "deep_ensemble" else ["deep_ensemble"]
        if method in GROWN or method == "deep_ensemble":
            references.append(CONTROL)
        for ref in references:
            if method == CONTROL:
                continue
            parts = [
                f"{label} {judge(table[method], table[ref], key, higher, seeds)}"
                for key, label, higher in _VERDICT_KEYS
            ]
            budgets = f"{table[method]['epochs_spent']['mean']:.0f} vs "
            budgets += f"{table[ref]['epochs_spent']['mean']:.0f} epochs"
            lines.append(f"**{method} vs {ref}** ({budgets}): " + "; ".join(parts) + ".")
    return lines


# --------------------------------------------------------------------------- the report


def _cell(stats, key, seeds):
    mean, sd = stats["mean"], stats["sd"]
    if key == "epochs_spent":
        text = f"{mean:.0f}"
        return text if seeds == 1 else f"{text} ± {sd:.0f}"
    digits = 1 if key == "fit_seconds" else 4
    return f"{mean:.{digits}f}" if seeds == 1 else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def _markdown_table(table, methods, columns, seeds):
    """A markdown table; the best mean of each column (as printed) in bold."""
    header = "| method | " + " | ".join(f"{h} {'↑' if up else '↓'}" for _, h, up in columns)
    lines = [header + " |", "|---" * (len(columns) + 1) + "|"]
    best = {}
    for key, _, up in columns:
        means = [round(table[m][key]["mean"], 4) for m in methods]
        best[key] = max(means) if up else min(means)
    for method in methods:
        cells = []
        for key, _, _ in columns:
            text = _cell(table[method][key], key, seeds)
            cells.append(
                f"**{text}**" if round(table[method][key]["mean"], 4) == best[key] else text
            )
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _descriptions(config):
    b = Budget(**config["budget"])
    E, X, K = b.mode_epochs, b.extra_epochs, b.n_modes
    text = {
        "single": f"one network, {E} epochs (cosine)",
        "deep_ensemble": f"{K} networks of {E} epochs each (cosine)",
        CONTROL: f"control: {K} networks of {E + X} epochs each, the cosine over all {E + X}",
        "espro": f"ESPRO: a 3-vertex simplex from each of the {K} modes, {X // 2 or 1} "
        f"epochs per vertex (rate 2 lr, vertices started 0.5 mode-norms away), "
        f"{b.n_predict_samples} points per simplex",
        "swag": f"MultiSWAG from the {K} modes: {X} SWA epochs each at lr {b.swa_lr}, about "
        f"{b.max_rank} snapshots, {b.n_predict_samples} samples per run",
        "spro": f"SPRO: the {K} modes joined by 2 connectors of {K * X // 2 or 1} epochs each",
        "curve": f"Bezier curve between the first 2 modes, {K * X} epochs",
        "fge": f"FGE from the single network: {b.n_snapshots} snapshots, cycles of "
        f"{b.cycle_length:g} epochs",
    }
    return "\n".join(f"- `{m}`: {text[m]}" for m in config["methods"])


def _report_markdown(results, figures):
    config, env, table = results["config"], results["environment"], results["table"]
    methods, seeds = config["methods"], config["seeds"]
    header = [
        "# simplexens compare",
        "",
        f"- command: `{config['command']}`",
        f"- data: {config['data']} ({config['n_train']} training / {config['n_test']} test rows)",
        f"- seeds: {', '.join(str(s) for s in range(seeds))} (networks; split, corruptions and "
        "OOD set use seed 0)",
        "- versions: "
        + ", ".join(
            f"{k} {env[k]}" for k in ("simplexens", "torch", "scikit-learn", "skorch", "numpy")
        ),
        f"- Python {env['python']} on {env['platform']}, {env['cores']} cores "
        f"(torch threads: {env['torch_threads']})",
        f"- total time: {results['total_seconds']:.1f} s",
    ]
    cells = "mean ± sd over seeds" if seeds > 1 else "one seed"
    sections = [
        "\n".join(header),
        "## Methods\n\n" + _descriptions(config),
        f"## Clean test set ({cells}; best in bold)\n\n"
        + _markdown_table(table, methods, CLEAN_COLUMNS, seeds),
        "## NLL under dataset shift (mean over corruption kinds)\n\n"
        + _markdown_table(table, methods, _shift_columns("nll"), seeds),
        "## Accuracy under dataset shift (mean over corruption kinds)\n\n"
        + _markdown_table(table, methods, _shift_columns("accuracy"), seeds),
        f"## Out-of-distribution detection\n\n{_ood_text(config)}\n\n"
        + _markdown_table(table, methods, OOD_COLUMNS, seeds)
        + "\n\nAUPR (OOD the positive class) and the false-positive rate on in-distribution "
        "inputs when 95% of the OOD inputs are flagged:\n\n"
        + _markdown_table(table, methods, OOD_DETAIL_COLUMNS, seeds),
        "## Verdicts\n\nWithin seed noise means |difference| < the pooled sd over seeds.\n\n"
        + "\n".join(f"- {line}" for line in results["verdicts"]),
        "## Figures\n\n" + "\n".join(f"![{name}]({name})" for name in figures),
    ]
    return "\n\n".join(sections) + "\n"


def _ood_text(config):
    if config.get("ood") == "classes":
        held = ", ".join(str(c) for c in config["held_out"])
        return (
            f"OOD set: every row of the held-out classes ({held}), which no network saw in "
            "training; the test set and the corruptions hold the other classes only."
        )
    if config.get("kind") == "image":
        return "OOD set: uniform-noise images of the test images' shape, as many as test rows."
    if config.get("kind") == "tabular":
        return (
            "OOD set: Gaussian points N(0, 25 I) in the standardised feature space, as many "
            "as test rows."
        )
    return ""


FIGURES = ("reliability.png", "shift.png", "cost.png")
"""The figures every report holds."""


def write_report(out, results, reliability, data):
    out.mkdir(parents=True, exist_ok=True)
    methods, table = results["config"]["methods"], results["table"]
    plot_reliability(out / FIGURES[0], reliability, data.y_test)
    plot_shift(out / FIGURES[1], table, methods, SEVERITIES)
    plot_cost(out / FIGURES[2], table, methods)
    (out / "report.md").write_text(_report_markdown(results, FIGURES), encoding="utf-8")
    (out / "results.json").write_text(json.dumps(results, indent=1, default=_json_default))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
