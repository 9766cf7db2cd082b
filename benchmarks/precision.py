"""Mixed precision and grouped members, as ratios to the float32, all-on-device path.

Three measurements on one device, each the fastest of ``--repeats`` runs:

- training: one epoch of a :class:`~simplexens.backends.skorch.MemberNet` (an MLP
  64-512-512-10, 4,096 random rows, batches of 256) at ``precision`` = float32, bfloat16,
  float16;
- prediction: :meth:`ParameterStack.forward` of S = 20 members on 2,048 rows at each
  precision, for the MLP (vmap) and a small CNN (one member after another);
- groups: the same float32 forward with the members stored on the CPU and moved to the
  device in groups of 1, 5 and 20 members (``member_memory``). On a CPU the groups are views
  and the ratio is the bookkeeping; on a GPU it includes the host-to-device copies.

Without native bfloat16/float16 arithmetic (AVX512-BF16, AMX, tensor cores) reduced precision
is much slower than float32: on an AVX2 CPU (torch 2.13) training ran 16-19 times slower and
prediction 4-8 times slower, the grouped forward as fast as the ordinary one (0.8-1.05,
noise). The setting pays off on GPUs and on CPUs with such units.

    python benchmarks/precision.py [--device cpu] [--repeats 3]
"""

import argparse
import copy
import platform
import time

import numpy as np
import torch
from torch import nn

from simplexens.backends.functional import ParameterStack, module_tensors
from simplexens.backends.parallel import private_rng
from simplexens.backends.skorch import make_net
from simplexens.datasets import SmallCNN

PRECISIONS = ("float32", "bfloat16", "float16")
S = 20
ROWS = 2048


def mlp():
    return nn.Sequential(
        nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
    )


def fastest(fn, repeats, device):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        begin = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - begin)
    return min(times)


def training(device, repeats):
    g = np.random.default_rng(0)
    X = g.normal(size=(4096, 64)).astype(np.float32)
    y = g.integers(0, 10, size=4096)
    times = {}
    for precision in PRECISIONS:
        kwargs = dict(
            criterion=nn.CrossEntropyLoss,
            optimizer=torch.optim.SGD,
            lr=0.01,
            max_epochs=1,
            batch_size=256,
            train_split=None,
            verbose=0,
            device=str(device),
            precision=precision,
        )

        def fit(kwargs=kwargs):
            with private_rng(0):
                module = mlp()
            make_net(module, kwargs, seed=0).fit(X, y)

        times[precision] = fastest(fit, repeats, device)
    return times


def stack(build, device, **kwargs):
    modules = []
    for seed in range(S):
        with private_rng(seed):
            modules.append(build())
    tensors = [module_tensors(m) for m in modules]
    return ParameterStack.from_members(copy.deepcopy(modules[0]), tensors, device, **kwargs)


def prediction(device, repeats):
    g = torch.Generator().manual_seed(0)
    cases = {
        "mlp": (mlp, torch.randn(ROWS, 64, generator=g)),
        "cnn": (lambda: SmallCNN(10, batchnorm=True), torch.rand(ROWS // 4, 1, 16, 16)),
    }
    times = {}
    for name, (build, x) in cases.items():
        members, x = stack(build, device), x.to(device)
        for precision in PRECISIONS:
            times[name, precision] = fastest(
                lambda m=members, p=precision, x=x: m.forward(x, precision=p), repeats, device
            )
        one = sum(t[0].numel() * t.element_size() for t in members.tensors.values())
        for size in (1, 5, S):
            budget = (size + 0.5) * one / 2**20
            grouped = stack(build, device, member_memory=budget if size < S else None)
            times[name, f"groups of {size}"] = fastest(
                lambda m=grouped, x=x: m.forward(x), repeats, device
            )
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {device}")
    train = training(device, args.repeats)
    print("\ntraining, one epoch            time (s)   ratio to float32")
    for precision, t in train.items():
        print(f"  {precision:<28} {t:8.3f}   {t / train['float32']:6.2f}")
    predict = prediction(device, args.repeats)
    for name in ("mlp", "cnn"):
        print(f"\nprediction, {name}, {S} members   time (s)   ratio to float32")
        base = predict[name, "float32"]
        for (kind, setting), t in predict.items():
            if kind == name:
                print(f"  {setting:<28} {t:8.4f}   {t / base:6.2f}")


if __name__ == "__main__":
    main()
