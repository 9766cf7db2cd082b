"""BatchNorm recalibration of many parameter samples against one ``update_bn`` pass per sample.

After sampling S parameter sets around a trained module (SWAG samples, simplex points), every
set needs BatchNorm statistics of its own. The SWAG reference code loads each sample into a
module and runs :func:`torch.optim.swa_utils.update_bn` over the training loader: S passes,
one module at a time, each drawing its batches from the ``DataLoader`` again. Ours,
:func:`simplexens.backends.batchnorm.recalibrate_batchnorm`, cuts the batches once and runs
all S members of a :class:`ParameterStack` over them (one vmap call per batch, or one member
after another, as the stack decides). Two baselines: ``update_bn`` over a ``DataLoader`` of
a ``TensorDataset`` (the reference's setting) and over a ready list of batch tensors (the
forward passes alone).

S = 30 samples of one module (its parameters plus small Gaussian noise); the data are random
inputs in batches of 128. Both results are checked equal (every running mean and variance of
every sample) before timing. Prints the fastest of ``--repeats`` runs of each, the speed-up
(target >= 3x), and the ratio of the peak memory allocated during each run (torch profiler).

    python benchmarks/bn_update.py [--repeats 3]
"""

import argparse
import copy
import os
import platform
import time

import torch
from torch import nn
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader, TensorDataset

from simplexens.backends.batchnorm import batchnorm_layers, recalibrate_batchnorm
from simplexens.backends.functional import ParameterStack, module_tensors

S = 30
BATCH = 128
NOISE = 0.01


def cnn(in_channels):
    """conv 16, BN, ReLU, conv 32, BN, ReLU, global average pool, linear to 10 classes."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


def mlp():
    """64-256-BN-256-BN-10."""
    return nn.Sequential(
        nn.Linear(64, 256),
        nn.BatchNorm1d(256),
        nn.ReLU(),
        nn.Linear(256, 256),
        nn.BatchNorm1d(256),
        nn.ReLU(),
        nn.Linear(256, 10),
    )


def samples(make, generator):
    """A base module (seeded initialisation, global RNG state left untouched) and S copies of
    it with Gaussian noise of scale NOISE on every parameter, drawn from ``generator``."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        base = make()
    modules = []
    with torch.no_grad():
        for _ in range(S):
            module = copy.deepcopy(base)
            for p in module.parameters():
                p.add_(NOISE * torch.randn(p.shape, generator=generator))
            modules.append(module)
    return base, modules


def best_time(fn, repeats, setup=lambda: None):
    """Fastest of ``repeats`` calls of ``fn`` (the least disturbed by other load); ``setup``
    runs untimed before each call. The caller has warmed ``fn`` up."""
    times = []
    for _ in range(repeats):
        setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def peak_bytes(fn):
    """Peak of the CPU memory allocated and not yet freed while ``fn`` runs.

    From the torch profiler: each operator's own net allocation (allocations minus frees,
    children excluded) counted when it ends, and the frees outside operators ("[memory]"
    events). Temporaries freed within one operator are not seen, so this is a lower bound at
    operator resolution.
    """
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True) as prof:
        fn()
    changes = sorted((e.time_range.end, e.self_cpu_memory_usage) for e in prof.events())
    live = peak = 0
    for _, change in changes:
        live += change
        peak = max(peak, live)
    return peak


def case(label, make, shape, n_rows, repeats):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n_rows, *shape, generator=generator)
    batches = list(x.split(BATCH))
    base, modules = samples(make, generator)
    stack = ParameterStack.from_members(copy.deepcopy(base), [module_tensors(m) for m in modules])
    pristine = {name: t.clone() for name, t in stack.tensors.items()}

    def fresh():
        stack.tensors = {name: t.clone() for name, t in pristine.items()}

    def ours(batches=batches):
        recalibrate_batchnorm(stack, batches)

    def reference(batches=batches):
        for module in modules:
            update_bn(batches, module)

    loader = DataLoader(TensorDataset(x), batch_size=BATCH)

    def reference_loader():
        for module in modules:
            update_bn(loader, module)

    # The check doubles as the warm-up of both.
    fresh()
    ours()
    reference()
    for name in batchnorm_layers(base):
        for i, module in enumerate(modules):
            for buffer in ("running_mean", "running_var"):
                torch.testing.assert_close(
                    stack.tensors[f"{name}.{buffer}"][i],
                    getattr(module.get_submodule(name), buffer),
                    rtol=1e-4,
                    atol=1e-5,
                    msg=lambda m, name=name, i=i, buffer=buffer: (
                        f"{label}: sample {i}, {name}.{buffer}: {m}"
                    ),
                )

    t_ref = best_time(reference, repeats)
    t_loader = best_time(reference_loader, repeats)
    t_ours = best_time(lambda: ours(list(x.split(BATCH))), repeats, setup=fresh)
    # The peak is reached within one batch, so two batches show it at a fraction of the cost.
    fresh()
    mem_ours = peak_bytes(lambda: ours(batches[:2]))
    mem_ref = peak_bytes(lambda: reference(batches[:2]))
    print(
        f"| {label} | {n_rows} | {len(batches)} | {t_loader * 1e3:.1f} | {t_ref * 1e3:.1f} "
        f"| {t_ours * 1e3:.1f} | {t_loader / t_ours:.2f}x | {t_ref / t_ours:.2f}x "
        f"| {mem_ref / 2**20:.2f} | {mem_ours / 2**20:.2f} | {mem_ours / mem_ref:.1f} |"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads; S = {S} samples, batch {BATCH}\n"
    )
    print(
        "| module | rows | batches | S x update_bn, DataLoader ms | S x update_bn, batch list ms "
        "| ours ms | speed-up vs DataLoader | speed-up vs batch list | update_bn peak MiB "
        "| ours peak MiB | peak memory ours/update_bn |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    case("CNN, 1x8x8 images", lambda: cnn(1), (1, 8, 8), 1347, args.repeats)
    case("MLP 64-256-BN-256-BN-10", mlp, (64,), 1347, args.repeats)
    case("CNN, 3x16x16 images", lambda: cnn(3), (3, 16, 16), 2000, args.repeats)


if __name__ == "__main__":
    main()
