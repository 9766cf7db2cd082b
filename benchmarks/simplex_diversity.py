"""Is one ESPRO simplex worth sampling? Diversity, fit and NLL of a simplex grown from a mode.

For each configuration and seed, two independent modes are trained by a
``DeepEnsembleClassifier`` (40 epochs, SGD lr 0.05, momentum 0.9, weight decay 5e-4, batch
128, a cosine schedule over the 40 epochs ending near 0). Mode 0 alone and the ensemble of
both modes, DE(2), are the references. From mode 0 (``init_modes``), an
``ESPROClassifier`` with one simplex of 3 vertices (n_modes=1, n_vertices=3, 10 prediction
points) is grown under each of five vertex settings:

1. the old defaults: init scale 0.1, λ 1e-3, vertex lr 0.05, constant, 5 epochs per vertex;
2. init 0.5, λ 0, vertex lr 0.1, cosine, 10 epochs per vertex;
3. init 1.0, λ 0, vertex lr 0.1, cosine, 20 epochs per vertex (the lambda study's choice);
4. as 3 with λ 1e-3 (the default λ: does it matter?);
5. init 0.1, λ 1.0, vertex lr 0.1, cosine, 20 epochs per vertex (grown by the volume term).

Measured, all through the public API (``simplex_vertices_``, ``simplex_log_volumes_``,
``predict_member_proba``, ``predict_proba``, ``epochs_spent_``):

- the distance of vertices 1 and 2 from the mode, relative to the mode's parameter norm,
  and log V of the final simplex;
- disagreement ratio: the fraction of test points where a simplex point's argmax differs
  from mode 0's (mean over the 10 points) divided by the same fraction for mode 1;
- Δ train acc: mean train accuracy of the 10 points minus mode 0's, in percentage points;
- test accuracy and NLL of the simplex ensemble, with the NLL of mode 0, DE(2) and the
  control, and the fraction of the NLL gap closed, (NLL mode 0 - NLL ESPRO) /
  (NLL mode 0 - NLL DE(2)), by the simplex and by the control.

The control is "the mode given the same extra low-rate epochs": a
``DeepEnsembleClassifier(n_estimators=1)`` with the same ``random_state`` as the modes (so
the same initial weights and data order as mode 0) trained for 40 + 2 x (epochs per
vertex) epochs under one cosine schedule over all of them. It is a fresh run from
scratch with a longer schedule, not a continuation of mode 0 (whose schedule has already
ended at a rate near 0).

Criteria, per seed and on the mean over seeds: (a) disagreement ratio >= 0.5, (b) train
accuracy drop <= 2 points (Δ train acc >= -2), (c) gap closed >= 1/3.

Configurations: A = ``make_classification`` (3000 rows, 40 features, 20 informative,
5 redundant, 10 classes, 1 cluster per class, class_sep 1.0, random_state = seed),
standardised, 2000 train / 1000 test, with an MLP of two hidden layers of 256 (A-mlp256)
or 64 (A-mlp64); B = synthetic 10-class sequences of length 64 (two class-specific
sinusoids and a bump, circularly shifted, plus noise; the templates are fixed, the rows
depend on the seed), same split, with a small 1-D CNN on input (n, 1, 64) (B-cnn) or the
256-wide MLP on (n, 64) (B-mlp256). Modes are trained once per (configuration, seed) and
reused by every setting; controls once per total epoch count.

    python benchmarks/simplex_diversity.py [--seeds 3] [--configs A-mlp256 ...] [--threads 1]
    python benchmarks/simplex_diversity.py --quick     # smoke run: 1 seed, few epochs

Progress goes to stderr; the tables go to stdout.
"""

import argparse
import os
import platform
import sys
import time

import numpy as np
import skorch
import torch
import torch.nn.functional as F
from sklearn.datasets import make_classification
from torch import nn

from simplexens import DeepEnsembleClassifier, ESPROClassifier
from simplexens.metrics import nll

MODE_EPOCHS = 40
N_TRAIN, N_TEST = 2000, 1000
COMMON = dict(lr=0.05, batch_size=128, optimizer__momentum=0.9, optimizer__weight_decay=5e-4)

#: Setting label -> ESPRO vertex parameters.
SETTINGS = {
    "1 old defaults: init .1, λ 1e-3, lr .05 const, 5 ep": dict(
        vertex_init_scale=0.1,
        volume_lambda=1e-3,
        vertex_lr=0.05,
        vertex_schedule="constant",
        epochs_per_vertex=5,
    ),
    "2 init .5, λ 0, lr .1 cos, 10 ep": dict(
        vertex_init_scale=0.5,
        volume_lambda=0.0,
        vertex_lr=0.1,
        vertex_schedule="cosine",
        epochs_per_vertex=10,
    ),
    "3 init 1, λ 0, lr .1 cos, 20 ep": dict(
        vertex_init_scale=1.0,
        volume_lambda=0.0,
        vertex_lr=0.1,
        vertex_schedule="cosine",
        epochs_per_vertex=20,
    ),
    "4 init 1, λ 1e-3, lr .1 cos, 20 ep": dict(
        vertex_init_scale=1.0,
        volume_lambda=1e-3,
        vertex_lr=0.1,
        vertex_schedule="cosine",
        epochs_per_vertex=20,
    ),
    "5 init .1, λ 1, lr .1 cos, 20 ep": dict(
        vertex_init_scale=0.1,
        volume_lambda=1.0,
        vertex_lr=0.1,
        vertex_schedule="cosine",
        epochs_per_vertex=20,
    ),
}

#: Configuration -> (data set, module, module kwargs).
CONFIGS = {
    "A-mlp256": ("A", "mlp", {"module__hidden": 256}),
    "A-mlp64": ("A", "mlp", {"module__hidden": 64}),
    "B-cnn": ("B", "cnn", {}),
    "B-mlp256": ("B", "mlp", {"module__hidden": 256}),
}
DEFAULT_CONFIGS = ("A-mlp256", "A-mlp64", "B-cnn", "B-mlp256")

# ------------------------------------------------------------------------------ data


def data_a(seed):
    X, y = make_classification(
        n_samples=3000,
        n_features=40,
        n_informative=20,
        n_redundant=5,
        n_classes=10,
        n_clusters_per_class=1,
        class_sep=1.0,
        random_state=seed,
    )
    return X, y


def data_b(seed, n=3000, length=64, noise=1.0):
    """10 classes of sequences: two class-specific sinusoids (frequencies, amplitudes,
    relative phase) and a class-specific bump, shifted circularly at random, plus noise."""
    templates = np.random.default_rng(1234)  # the same classes for every seed
    freqs = templates.integers(1, 8, size=(10, 2))
    amps = templates.uniform(0.5, 1.2, size=(10, 2))
    rel = templates.uniform(0, 2 * np.pi, size=10)
    bump_w = templates.uniform(2, 8, size=10)
    bump_a = templates.uniform(-1.5, 1.5, size=10)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, size=n)
    t = np.arange(length)[None, :]
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
    jitter = rng.uniform(0.7, 1.3, size=(n, 2))
    X = amps[y, :1] * jitter[:, :1] * np.sin(2 * np.pi * freqs[y, :1] * t / length + phase) + amps[
        y, 1:
    ] * jitter[:, 1:] * np.sin(2 * np.pi * freqs[y, 1:] * t / length + rel[y][:, None] + 2 * phase)
    centre = rng.uniform(0, length, size=(n, 1))
    d = np.minimum(np.abs(t - centre), length - np.abs(t - centre))
    X = X + bump_a[y][:, None] * np.exp(-0.5 * (d / bump_w[y][:, None]) ** 2)
    X = X + noise * rng.standard_normal(X.shape)
    return X, y


def load(dataset, seed, channels):
    """2000 training / 1000 test rows, standardised with the training rows' statistics."""
    X, y = data_a(seed) if dataset == "A" else data_b(seed)
    order = np.random.default_rng(seed + 99).permutation(len(y))
    train, test = order[:N_TRAIN], order[N_TRAIN : N_TRAIN + N_TEST]
    mean, sd = X[train].mean(0), X[train].std(0) + 1e-8
    X = ((X - mean) / sd).astype(np.float32)
    if channels:
        X = X[:, None, :]
    return X[train], y[train], X[test], y[test]


# ------------------------------------------------------------------------------ modules


class MLP(nn.Module):
    def __init__(self, n_features_in, n_classes, hidden=256):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_features_in, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x):
        return self.net(x)


class CNN1D(nn.Module):
    """Two circular convolutions (16 and 32 channels, kernel 5), each with max-pooling by
    2, and a linear layer; input (n, 1, length)."""

    def __init__(self, n_classes, length=64):
        super().__init__()
        self.c1 = nn.Conv1d(1, 16, 5, padding=2, padding_mode="circular")
        self.c2 = nn.Conv1d(16, 32, 5, padding=2, padding_mode="circular")
        self.fc = nn.Linear(32 * (length // 4), n_classes)

    def forward(self, x):
        h = F.max_pool1d(F.relu(self.c1(x)), 2)
        h = F.max_pool1d(F.relu(self.c2(h)), 2)
        return self.fc(h.flatten(1))


MODULES = {"mlp": MLP, "cnn": CNN1D}

# ------------------------------------------------------------------------------ runs


def cosine(epochs):
    return skorch.callbacks.LRScheduler(
        policy=torch.optim.lr_scheduler.CosineAnnealingLR, T_max=epochs
    )


def accuracy(proba, y):
    return float((proba.argmax(-1) == y).mean())


def flat_norm(tensors):
    return float(np.sqrt(sum(float(t.double().square().sum()) for t in tensors)))


def run_config(name, seed, mode_epochs, settings, log):
    """All settings of one configuration and seed; one dict of metrics per setting."""
    dataset, arch, module_kwargs = CONFIGS[name]
    X, y, X_test, y_test = load(dataset, seed, channels=arch == "cnn")
    module = MODULES[arch]

    start = time.perf_counter()
    modes = DeepEnsembleClassifier(
        module,
        n_estimators=2,
        max_epochs=mode_epochs,
        callbacks=[cosine(mode_epochs)],
        random_state=seed,
        **COMMON,
        **module_kwargs,
    ).fit(X, y)
    log(f"{name} seed {seed}: modes {time.perf_counter() - start:.0f} s")
    member_test = modes.predict_member_proba(X_test)
    mode_train = modes.predict_member_proba(X)[0]
    mode_argmax = member_test[0].argmax(-1)
    ref = {
        "nll_mode": nll(y_test, member_test[0], labels=modes.classes_),
        "nll_mode1": nll(y_test, member_test[1], labels=modes.classes_),
        "nll_de2": nll(y_test, modes.predict_proba(X_test), labels=modes.classes_),
        "acc_mode": accuracy(member_test[0], y_test),
        "acc_de2": accuracy(modes.predict_proba(X_test), y_test),
        "train_acc_mode": 100 * accuracy(mode_train, y),
        "dis_mode1": float((member_test[1].argmax(-1) != mode_argmax).mean()),
    }
    state0, state1 = modes.mode_state_dicts()
    gap = ref["nll_mode"] - ref["nll_de2"]

    controls = {}
    rows = {}
    for label, params in settings.items():
        total = mode_epochs + 2 * params["epochs_per_vertex"]
        if total not in controls:
            start = time.perf_counter()
            control = DeepEnsembleClassifier(
                module,
                n_estimators=1,
                max_epochs=total,
                callbacks=[cosine(total)],
                random_state=seed,
                **COMMON,
                **module_kwargs,
            ).fit(X, y)
            controls[total] = nll(y_test, control.predict_proba(X_test), labels=control.classes_)
            log(f"  control {total} epochs {time.perf_counter() - start:.0f} s")
        start = time.perf_counter()
        espro = ESPROClassifier(
            module,
            n_modes=1,
            n_vertices=3,
            n_predict_samples=10,
            init_modes=[state0],
            max_epochs=mode_epochs,
            random_state=seed,
            **params,
            **COMMON,
            **module_kwargs,
        ).fit(X, y)
        seconds = time.perf_counter() - start
        vertices = espro.simplex_vertices_
        names = list(vertices)
        norm = flat_norm(vertices[n][0, 0] for n in names)
        dist = [
            flat_norm(vertices[n][0, j] - vertices[n][0, 0] for n in names) / norm for j in (1, 2)
        ]
        points_test = espro.predict_member_proba(X_test)
        points_train = espro.predict_member_proba(X)
        proba = espro.predict_proba(X_test)
        nll_espro = nll(y_test, proba, labels=espro.classes_)
        dis = float((points_test.argmax(-1) != mode_argmax[None]).mean())
        row = {
            "dist1": dist[0],
            "dist2": dist[1],
            "log_v": float(espro.simplex_log_volumes_[0, -1]),
            "dis_ratio": dis / ref["dis_mode1"],
            "d_train_acc": 100 * float((points_train.argmax(-1) == y[None]).mean())
            - ref["train_acc_mode"],
            "acc": accuracy(proba, y_test),
            "nll_mode": ref["nll_mode"],
            "nll_espro": nll_espro,
            "nll_de2": ref["nll_de2"],
            "nll_ctrl": controls[total],
            "gap": (ref["nll_mode"] - nll_espro) / gap,
            "gap_ctrl": (ref["nll_mode"] - controls[total]) / gap,
            "epochs": espro.epochs_spent_,
            "seconds": seconds,
        }
        rows[label] = row
        log(
            f"  {label}: {seconds:.0f} s, dist {dist[0]:.2f}/{dist[1]:.2f}, "
            f"dis ratio {row['dis_ratio']:.2f}, Δtrain {row['d_train_acc']:.2f}, "
            f"gap {row['gap']:.2f} (control {row['gap_ctrl']:.2f})"
        )
    ref["norm"] = flat_norm(t for k, t in state0.items() if k in vertices)
    ref["dist_mode1"] = (
        flat_norm(state1[k] - state0[k] for k in state0 if k in vertices) / ref["norm"]
    )
    return ref, rows


# ------------------------------------------------------------------------------ tables

CRITERIA = {
    "a": ("disagreement ratio ≥ 0.5", lambda r: r["dis_ratio"] >= 0.5),
    "b": ("train-accuracy drop ≤ 2 points", lambda r: r["d_train_acc"] >= -2.0),
    "c": ("gap closed ≥ 1/3", lambda r: r["gap"] >= 1 / 3),
}

COLUMNS = (
    ("dist1", "dist v1 / ‖mode‖", 2),
    ("dist2", "dist v2 / ‖mode‖", 2),
    ("log_v", "log V", 2),
    ("dis_ratio", "disagreement ratio", 2),
    ("d_train_acc", "Δ train acc (pts)", 2),
    ("acc", "test acc", 3),
    ("nll_mode", "NLL mode 0", 3),
    ("nll_espro", "NLL ESPRO", 3),
    ("nll_de2", "NLL DE(2)", 3),
    ("nll_ctrl", "NLL control", 3),
    ("gap", "gap closed", 2),
    ("gap_ctrl", "gap closed by control", 2),
    ("epochs", "epochs_spent_", 0),
)


def mean_sd(values, digits):
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f}"


def print_config(name, refs, results, settings):
    """One markdown table (mean ± sd over seeds per setting) and the verdict."""
    n = len(refs)
    ref = {k: np.array([r[k] for r in refs]) for k in refs[0]}
    print(f"### {name} ({n} seed{'s' * (n > 1)})\n")
    print(
        f"References: mode 0 test acc {mean_sd(ref['acc_mode'], 3)}, NLL "
        f"{mean_sd(ref['nll_mode'], 3)}, train acc {mean_sd(ref['train_acc_mode'], 2)}%; "
        f"mode 1 NLL {mean_sd(ref['nll_mode1'], 3)}; DE(2) test acc {mean_sd(ref['acc_de2'], 3)}, "
        f"NLL {mean_sd(ref['nll_de2'], 3)}; test disagreement mode 1 vs mode 0 "
        f"{mean_sd(ref['dis_mode1'], 3)}; ‖mode 0‖ {mean_sd(ref['norm'], 2)}; "
        f"‖mode 1 - mode 0‖ / ‖mode 0‖ {mean_sd(ref['dist_mode1'], 2)}.\n"
    )
    header = ["setting", *(title for _, title, _ in COLUMNS), "seeds meeting a / b / c", "fit s"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    counts, on_mean = {}, {}
    for label in settings:
        rows = [r[label] for r in results]
        means = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        counts[label] = {c: sum(test(r) for r in rows) for c, (_, test) in CRITERIA.items()}
        counts[label]["all"] = sum(all(test(r) for _, test in CRITERIA.values()) for r in rows)
        on_mean[label] = {c: test(means) for c, (_, test) in CRITERIA.items()}
        cells = [
            f"{means[key]:.0f}" if digits == 0 else mean_sd([r[key] for r in rows], digits)
            for key, _, digits in COLUMNS
        ]
        met = " / ".join(f"{counts[label][c]}/{n}" for c in CRITERIA)
        seconds = np.mean([r["seconds"] for r in rows])
        print(f"| {label} | " + " | ".join(cells) + f" | {met} | {seconds:.0f} |")
    print()
    short = {label: label.split()[0] for label in settings}
    parts = []
    for c, (text, _) in CRITERIA.items():
        met = [short[s] for s in settings if on_mean[s][c]] or ["none"]
        seeds = ", ".join(f"{short[s]}: {counts[s][c]}/{n}" for s in settings)
        parts.append(f"({c}) {text}: on the mean {', '.join(met)}; seeds {seeds}")
    every = [short[s] for s in settings if all(on_mean[s].values())] or ["none"]
    seeds = ", ".join(f"{short[s]}: {counts[s]['all']}/{n}" for s in settings)
    print(
        f"**Verdict {name}:** " + ". ".join(parts) + f". All three on the mean: "
        f"{', '.join(every)}; all three on the same seed: {seeds}.\n"
    )


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..n-1 (default 3)")
    parser.add_argument(
        "--configs", nargs="+", choices=list(CONFIGS), default=list(DEFAULT_CONFIGS)
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: shared box)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 seed, 4-epoch modes, 1-4 ep/vertex"
    )
    return parser.parse_args()


def main(args):
    n_seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    mode_epochs = 4 if args.quick else MODE_EPOCHS
    settings = SETTINGS
    if args.quick:
        settings = {
            k: {**v, "epochs_per_vertex": max(1, v["epochs_per_vertex"] // 5)}
            for k, v in SETTINGS.items()
        }

    def log(message):
        print(message, file=sys.stderr, flush=True)

    begin = time.perf_counter()
    print(
        f"machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}; Python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), skorch "
        f"{skorch.__version__}\n"
    )
    print(
        f"{n_seeds} seed(s); modes {mode_epochs} epochs{' (--quick)' if args.quick else ''}; "
        f"ESPRO n_modes=1, n_vertices=3, n_predict_samples=10, grown from mode 0. Criteria: "
        f"(a) disagreement ratio ≥ 0.5, (b) Δ train acc ≥ -2 points, (c) gap closed ≥ 1/3. "
        f"Control: one network, same seed as mode 0, trained from scratch for "
        f"{mode_epochs} + 2 x (epochs per vertex) epochs under one cosine schedule.\n"
    )
    for name in args.configs:
        config_start = time.perf_counter()
        refs, results = [], []
        for seed in range(n_seeds):
            ref, rows = run_config(name, seed, mode_epochs, settings, log)
            refs.append(ref)
            results.append(rows)
        print_config(name, refs, results, settings)
        print(f"({name}: {time.perf_counter() - config_start:.0f} s)\n", flush=True)
    print(f"Total run time: {(time.perf_counter() - begin) / 60:.1f} min")


if __name__ == "__main__":
    ARGS = parse_args()
    torch.set_num_threads(ARGS.threads)
    main(ARGS)
