"""Cost of one SPRO or curve training step against an ESPRO step and a plain step.

All three methods train anchors through the same module (points = coefficients x anchors,
M = 5 points per step, each evaluating its own fifth of the batch in one vectorised call):

- ESPRO: the newest vertex of a 3-vertex simplex, minus λ log V;
- SPRO: the second connector of a complex of 3 modes (3 simplexes of 4 vertices sharing the
  connectors), points drawn uniformly over the complex (volume-weighted choice of simplex,
  which needs the simplexes' volumes in the forward pass), minus λ Σ log V over all 3;
- curve: the bend of a quadratic Bezier curve between 2 modes, t ~ U(0, 1); and a
  polygonal chain of 5 bends (3 trainable at once).

One step = zero_grad, forward, loss, backward, optimizer step. The variants are timed in
turns (``espro_step.median_step_times``); the table gives median step times and ratios to
the plain step and to the ESPRO step of the same module and batch.

    python benchmarks/anchor_step.py [--rounds 10]
"""

import argparse
import os
import platform
from functools import partial

import torch
from espro_step import cnn, median_step_times, mlp, simplex_for
from torch import nn

from simplexens.backends.simplex import AnchorModule, ComplexSampler, CurveSampler
from simplexens.geometry.complex import connector_complex

M = 5
LAMBDA = 1e-3


def jittered(module, n, generator, scale=0.1):
    """``n`` parameter sets near the module's, stacked: stand-ins for trained anchors."""
    return {
        name: torch.stack(
            [
                p.detach()
                + scale
                * p.detach().norm()
                / p.numel() ** 0.5
                * torch.randn(p.shape, generator=generator)
                for _ in range(n)
            ]
        )
        for name, p in module.named_parameters()
    }


def spro_for(module, generator):
    anchors = jittered(module, 5, generator)  # 3 modes, 2 connectors (the last trainable)
    mask = [False] * 4 + [True]
    complex_ = connector_complex(3, 2)
    return AnchorModule(module, anchors, mask, ComplexSampler(), M, generator, complex_)


def curve_for(module, generator, curve, n_bends):
    anchors = jittered(module, n_bends, generator)
    mask = [False] + [True] * (n_bends - 2) + [False]
    return AnchorModule(module, anchors, mask, CurveSampler(curve), M, generator)


def anchor_step(anchored, volume):
    optimizer = torch.optim.SGD(anchored.trainable.parameters(), lr=1e-3, momentum=0.9)

    def step(x, y):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(anchored(x), y)
        if volume:
            kept = anchored.take_step_volumes()
            volumes = kept if kept is not None else anchored.log_volumes()
            loss = loss - LAMBDA * volumes.sum().float()
        loss.backward()
        optimizer.step()

    return step


def case(name, make, shape, batch, rounds):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *shape, generator=generator)
    y = torch.randint(10, (batch,), generator=generator)
    module = make()
    variants = {
        "ESPRO": (simplex_for(module, generator), True),
        "SPRO": (spro_for(make(), generator), True),
        "Bezier, 3 bends": (curve_for(make(), generator, "bezier", 3), False),
        "chain, 5 bends": (curve_for(make(), generator, "polychain", 5), False),
    }
    for anchored, _ in variants.values():
        with torch.no_grad():
            anchored(x)  # decides the path
    plain_opt = torch.optim.SGD(module.parameters(), lr=1e-3, momentum=0.9)

    def plain():
        plain_opt.zero_grad()
        nn.functional.cross_entropy(module(x), y).backward()
        plain_opt.step()

    steps = {"plain": plain}
    steps.update({k: partial(anchor_step(a, v), x, y) for k, (a, v) in variants.items()})
    times = median_step_times(steps, rounds)
    for variant, (anchored, _) in variants.items():
        path = "fused" if anchored.fused else "generic (vmap)"
        print(
            f"| {name} | {batch} | {variant} | {path} | {times['plain'] * 1e3:.2f} "
            f"| {times[variant] * 1e3:.2f} | {times[variant] / times['plain']:.2f} "
            f"| {times[variant] / times['ESPRO']:.2f} |"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads; M = {M}\n"
    )
    print("| module | batch | method | path | plain ms | method ms | /plain | /ESPRO |")
    print("|---|---|---|---|---|---|---|---|")
    for batch in (256, 1000):
        case("64-512-512-10 MLP", mlp, (64,), batch, args.rounds)
    case("CNN, 3x16x16 images", cnn, (3, 16, 16), 256, args.rounds)


if __name__ == "__main__":
    main()
