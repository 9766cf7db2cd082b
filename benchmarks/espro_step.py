"""Cost of one ESPRO training step against a plain SGD step and the reference design.

One step = zero_grad, forward, loss, backward, optimizer step, on the same module and batch:

- plain: an ordinary step of the module;
- ESPRO (ours): the newest vertex of a 3-vertex simplex, M = 5 points drawn per step, each
  evaluating its own fifth of the batch, minus λ log V. Modules built of linear layers take
  the fused path (one weight-gradient product per layer); others the generic vmap path,
  which is also timed on the MLP for comparison;
- reference design: the same loss with the M points evaluated one after another, each on the
  whole batch (M sequential forward passes).

The variants are timed in turns, a few consecutive steps each, so that load from other
processes on a shared machine hits them alike; the table gives the median step time of each
and the ratios to the plain step.

    python benchmarks/espro_step.py [--rounds 10]
"""

import argparse
import copy
import os
import platform
import time
from functools import partial

import torch
from torch import nn
from torch.func import functional_call

from simplexens.backends.simplex import initial_vertex, simplex_module
from simplexens.geometry.simplex import sample_barycentric, simplex_points

M = 5
LAMBDA = 1e-3


def mlp():
    """64-512-512-10: about 300k parameters and little compute per parameter."""
    return nn.Sequential(
        nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
    )


def cnn():
    """A small convolutional network for 3x16x16 images: about 60k parameters, each reused
    at every spatial position (the kind of model the paper trains)."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


def median_step_times(steps_by_name, rounds, block=6):
    """Median seconds per call of each step function.

    The functions run in turns, ``block`` consecutive calls each (the first of a block is a
    warm-up and not timed), so that each is timed with its own data in the caches, as in
    training, while load from other processes hits all of them alike.
    """
    times = {name: [] for name in steps_by_name}
    for _ in range(rounds):
        for name, step in steps_by_name.items():
            step()
            for _ in range(block - 1):
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def simplex_for(module, generator):
    """A 3-vertex simplex over ``module``: the module, a second frozen vertex, a new one."""
    vertices = {n: p.detach()[None] for n, p in module.named_parameters()}
    second = initial_vertex(vertices, 0.1, generator)
    vertices = {n: torch.cat([v, second[n][None]]) for n, v in vertices.items()}
    start = initial_vertex(vertices, 0.1, generator)
    return simplex_module(copy.deepcopy(module), vertices, start, M, generator)


def reference_loss(simplex, x, y, generator):
    """The reference design: M full-batch forward passes, one per sampled point."""
    vertices = simplex.anchors()
    weights = sample_barycentric(M, 3, generator=generator)
    points = simplex_points(vertices, weights)
    buffers = dict(simplex.template.named_buffers())
    total = 0.0
    for m in range(M):
        point = {name: t[m] for name, t in points.items()}
        total = total + nn.functional.cross_entropy(
            functional_call(simplex.template, (point, buffers), (x,)), y
        )
    return total / M - LAMBDA * simplex.log_volume().float()


def espro_step(simplex):
    optimizer = torch.optim.SGD(simplex.trainable.parameters(), lr=1e-3, momentum=0.9)

    def step(x, y):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(simplex(x), y)
        (loss - LAMBDA * simplex.log_volume().float()).backward()
        optimizer.step()

    return step


def case(name, make, shape, batch, rounds):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *shape, generator=generator)
    y = torch.randint(10, (batch,), generator=generator)
    module = make()
    simplex = simplex_for(module, generator)
    with torch.no_grad():
        simplex(x)  # decides the path
    plain_opt = torch.optim.SGD(module.parameters(), lr=1e-3, momentum=0.9)
    ref_opt = torch.optim.SGD(simplex.trainable.parameters(), lr=1e-3, momentum=0.9)

    def plain():
        plain_opt.zero_grad()
        nn.functional.cross_entropy(module(x), y).backward()
        plain_opt.step()

    def reference():
        ref_opt.zero_grad()
        reference_loss(simplex, x, y, generator).backward()
        ref_opt.step()

    paths = {"fused" if simplex.fused else "generic (vmap)": espro_step(simplex)}
    if simplex.fused:
        generic = simplex_for(module, torch.Generator().manual_seed(1))
        generic.fused = False
        paths["generic (vmap)"] = espro_step(generic)
    steps_by_name = {"plain": plain, "reference": reference}
    steps_by_name.update({path: partial(step, x, y) for path, step in paths.items()})
    times = median_step_times(steps_by_name, rounds)
    t_plain, t_ref = times["plain"], times["reference"]
    for path in paths:
        t_ours = times[path]
        print(
            f"| {name} | {batch} | {path} | {t_plain * 1e3:.2f} | {t_ours * 1e3:.2f} "
            f"| {t_ref * 1e3:.2f} | {t_ours / t_plain:.2f} | {t_ref / t_plain:.2f} "
            f"| {t_ref / t_ours:.2f}x |"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads; M = {M}, 3 vertices\n"
    )
    print(
        "| module | batch | ESPRO path | plain ms | ESPRO ms | reference ms | ESPRO/plain "
        "| reference/plain | ESPRO speed-up over reference |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for batch in (256, 1000):
        case("64-512-512-10 MLP", mlp, (64,), batch, args.rounds)
    case("CNN, 3x16x16 images", cnn, (3, 16, 16), 256, args.rounds)


if __name__ == "__main__":
    main()
