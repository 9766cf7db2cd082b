"""Batch sizes for prediction and BatchNorm recalibration chosen by a memory budget.

Oracles: activation sizes counted by hand from the layer widths; the arithmetic of the budget
(floor(MiB * 2**20 / bytes per row), clipped); predictions of one batch of all rows; and
:func:`torch.optim.swa_utils.update_bn` over the same batches, one member at a time.
"""

import copy
import warnings

import numpy as np
import pytest
import sklearn
import torch
from nets import MLP
from numpy.testing import assert_allclose, assert_array_equal
from torch import nn
from torch.optim.swa_utils import update_bn
from torch.testing import assert_close

from simplexens import DeepEnsembleClassifier, SWAGClassifier
from simplexens.backends.batching import (
    FLOAT64_OUTPUTS,
    batch_size_for,
    batch_slices,
    bytes_per_row,
    rows_per_batch,
)
from simplexens.backends.batchnorm import recalibrate_batchnorm
from simplexens.backends.functional import ParameterStack, module_tensors
from simplexens.backends.parallel import private_rng

S = 3
D, H1, H2, C = 10, 24, 12, 4
MiB = 2**20

pytestmark = pytest.mark.usefixtures("global_rng_untouched")


# --------------------------------------------------------------------------- helpers


class Deep(nn.Module):
    """D-H1-H2-C perceptron inside a Sequential (whose output is its last layer's)."""

    def __init__(self, inplace=False):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(D, H1),
            nn.ReLU(inplace=inplace),
            nn.Linear(H1, H2),
            nn.ReLU(inplace=inplace),
            nn.Linear(H2, C),
        )

    def forward(self, x):
        return self.net(x)


class BNMLP(nn.Module):
    """Linear -> BatchNorm1d -> ReLU -> Linear, sized from the data."""

    def __init__(self, n_features_in, n_classes, hidden=8):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_features_in, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x):
        return self.net(x)


class Failing(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(D, C)

    def forward(self, x):
        self.linear(x)
        raise RuntimeError("broken module")


def stack_of(factory, n=S):
    modules = []
    for seed in range(n):
        with private_rng(seed):
            modules.append(factory().eval())
    template = copy.deepcopy(modules[0])
    return ParameterStack.from_members(template, [module_tensors(m) for m in modules]), modules


def rows(n, width=D, seed=0):
    return torch.randn(n, width, generator=torch.Generator().manual_seed(seed))


def deep_row_bytes(inplace=False, n_members=S, element=4):
    """By hand: the input once; per member every new output, and two float64 logit buffers."""
    outputs = (H1 + H2 + C) if inplace else (H1 + H1 + H2 + H2 + C)
    return D * element + n_members * (outputs * element + C * 8 * FLOAT64_OUTPUTS)


def quick(module=MLP, **params):
    defaults = dict(n_estimators=2, max_epochs=2, lr=0.1, batch_size=64, random_state=0)
    return DeepEnsembleClassifier(module, **{**defaults, **params})


def record_batch_rows(clf):
    """Make ``clf`` record the number of rows of every batch it evaluates."""
    seen = []
    evaluate = clf._member_outputs

    def recording(X):
        seen.append(len(X))
        return evaluate(X)

    clf._member_outputs = recording
    return seen


def sizes(slices):
    return [s.stop - s.start for s in slices]


# --------------------------------------------------------------------------- the estimate


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("n_probe", [1, 2])
def test_bytes_per_row_counts_layer_outputs_by_hand(inplace, n_probe):
    stack, _ = stack_of(lambda: Deep(inplace))
    assert bytes_per_row(stack, rows(n_probe)) == deep_row_bytes(inplace)


def test_bytes_per_row_scales_with_members_and_element_size():
    stack, _ = stack_of(Deep, n=7)
    assert bytes_per_row(stack, rows(2)) == deep_row_bytes(n_members=7)
    double, _ = stack_of(lambda: Deep().double())
    assert bytes_per_row(double, rows(2).double()) == deep_row_bytes(element=8)


def test_views_of_the_input_are_not_counted():
    # Flatten of an image batch is a view of the input: no new memory.
    stack, _ = stack_of(lambda: MLP(16, C, hidden=H1))
    images = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    expected = 16 * 4 + S * ((H1 + H1 + C) * 4 + C * 8 * FLOAT64_OUTPUTS)
    assert bytes_per_row(stack, images) == expected


def test_probe_restores_training_flags_and_removes_hooks():
    stack, _ = stack_of(Deep)
    stack.template.net[1].train()
    before = {name: m.training for name, m in stack.template.named_modules()}
    bytes_per_row(stack, rows(2))
    assert {name: m.training for name, m in stack.template.named_modules()} == before
    assert not any(m._forward_hooks for m in stack.template.modules())


def test_probe_cleans_up_when_the_module_raises():
    stack, _ = stack_of(Failing, n=2)
    stack.template.train()
    with pytest.raises(RuntimeError, match="broken module"):
        bytes_per_row(stack, rows(2))
    assert all(m.training for m in stack.template.modules())
    assert not any(m._forward_hooks for m in stack.template.modules())


# --------------------------------------------------------------------------- the budget


def test_rows_follow_the_budget_and_are_clipped():
    stack, _ = stack_of(Deep)
    sample, n_rows = rows(2), 5000
    row_bytes = deep_row_bytes()
    budgets = [0.05, 0.1, 0.3, 1, 2.5, 10, 1024]
    chosen = [rows_per_batch(stack, sample, n_rows, wm) for wm in budgets]
    expected = [min(n_rows, int(wm * MiB // row_bytes)) for wm in budgets]
    assert chosen == expected
    assert chosen == sorted(chosen)  # monotonic in the budget
    assert chosen[0] > 1 and chosen[-1] == n_rows  # the range really runs from small to all
    assert rows_per_batch(stack, sample, 1, 1e-6) == 1


def test_a_row_over_the_budget_warns_and_gives_one_row():
    stack, _ = stack_of(Deep)
    budget = 0.5 * deep_row_bytes() / MiB
    with pytest.warns(UserWarning, match="more than working_memory"):
        assert rows_per_batch(stack, rows(2), 100, budget) == 1


def test_none_reads_scikit_learns_working_memory():
    stack, _ = stack_of(Deep)
    with sklearn.config_context(working_memory=1):
        from_config = rows_per_batch(stack, rows(2), 10**6)
    assert from_config == MiB // deep_row_bytes()
    assert rows_per_batch(stack, rows(2), 10**6, 1) == from_config


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), True, "1"])
def test_bad_working_memory_is_refused(bad):
    stack, _ = stack_of(Deep)
    with pytest.raises(ValueError, match="working_memory must be a positive number"):
        rows_per_batch(stack, rows(2), 100, bad)


def test_explicit_batch_size_wins():
    stack, _ = stack_of(Deep)
    X = rows(40).numpy()
    assert batch_size_for(stack, X, 7, 1e-9) == 7
    assert batch_size_for(stack, X, -1, 1e-9) == 40
    assert batch_size_for(stack, X, 500, None) == 40
    assert batch_size_for(stack, X, None, 3 * deep_row_bytes() / MiB) == 3


@pytest.mark.parametrize(
    ("n_rows", "step", "min_rows", "expected"),
    [
        (10, 3, 1, [3, 3, 3, 1]),
        (10, 3, 2, [3, 3, 4]),
        (10, 1, 2, [2, 2, 2, 2, 2]),
        (9, 1, 2, [2, 2, 2, 3]),
        (7, 7, 2, [7]),
        (7, 100, 2, [7]),
        (1, 5, 2, [1]),
        (0, 5, 1, []),
    ],
)
def test_batch_slices(n_rows, step, min_rows, expected):
    assert sizes(batch_slices(n_rows, step, min_rows)) == expected


def test_batch_slices_cover_every_row_once_in_order():
    for n_rows in range(1, 40):
        for step in range(1, 12):
            for min_rows in (1, 2):
                slices = batch_slices(n_rows, step, min_rows)
                covered = np.concatenate([np.arange(n_rows)[s] for s in slices])
                assert_array_equal(covered, np.arange(n_rows))
                assert min(sizes(slices)) >= min(min_rows, n_rows)


# --------------------------------------------------------------------------- prediction


@pytest.fixture(scope="module")
def fitted(small_digits):
    X, y = small_digits
    return quick().fit(X, y)


def digits_row_bytes(clf, X):
    """Bytes of one row for the digits MLP (64-16-n_classes, Flatten a no-op), by hand."""
    hidden, n_classes, n_features = 16, len(clf.classes_), X.shape[1]
    per_member = (hidden + hidden + n_classes) * 4 + n_classes * 8 * FLOAT64_OUTPUTS
    return n_features * 4 + clf.n_members_ * per_member


@pytest.mark.parametrize(
    ("params", "batch"),
    [
        (dict(working_memory="7 rows"), 7),
        (dict(working_memory="61 rows"), 61),
        (dict(working_memory=None), 300),
        (dict(iterator_valid__batch_size=-1), 300),
        (dict(iterator_valid__batch_size=13), 13),
        (dict(iterator_valid__batch_size=13, working_memory="7 rows"), 13),
    ],
)
def test_predictions_do_not_depend_on_the_batch_size(fitted, small_digits, params, batch):
    X, _ = small_digits
    clf = copy.deepcopy(fitted)
    row_bytes = digits_row_bytes(clf, X)
    if isinstance(params.get("working_memory"), str):
        n = int(params["working_memory"].split()[0])
        params = {**params, "working_memory": (n + 0.5) * row_bytes / MiB}
    reference = [fitted.predict_proba(X), fitted.predict_log_proba(X)]
    reference.append(fitted.predict_member_proba(X))
    clf.set_params(**params)
    seen = record_batch_rows(clf)
    outputs = [clf.predict_proba(X), clf.predict_log_proba(X), clf.predict_member_proba(X)]
    assert seen == sizes(batch_slices(len(X), batch)) * 3
    for out, ref in zip(outputs, reference, strict=True):
        assert_allclose(out, ref, rtol=1e-6, atol=1e-12)
    assert_array_equal(clf.predict(X), fitted.predict(X))


def test_training_batch_size_does_not_batch_prediction(small_digits):
    X, y = small_digits
    clf = quick(batch_size=16).fit(X, y)
    seen = record_batch_rows(clf)
    clf.predict_proba(X)
    assert seen == [len(X)]


def test_iterator_valid_batch_size_silences_the_budget(fitted, small_digits):
    X, _ = small_digits
    clf = copy.deepcopy(fitted).set_params(working_memory=1e-6)
    with pytest.warns(UserWarning, match="more than working_memory"):
        clf.predict_proba(X[:5])
    clf.set_params(iterator_valid__batch_size=50)
    seen = record_batch_rows(clf)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf.predict_proba(X)
    assert seen == [50] * 6


def test_choosing_the_batch_size_leaves_fitted_state_alone(fitted, small_digits):
    X, _ = small_digits
    clf = copy.deepcopy(fitted)
    state = {k: v for k, v in vars(clf).items() if k.endswith("_")}
    tensors = {k: v.clone() for k, v in clf.members_.tensors.items()}
    training = [m.training for m in clf.members_.template.modules()]
    for wm in (1e-3, 0.05, None):
        clf.set_params(working_memory=wm)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            clf.predict_proba(X)
    assert {k: v for k, v in vars(clf).items() if k.endswith("_")}.keys() == state.keys()
    for name, t in clf.members_.tensors.items():
        assert torch.equal(t, tensors[name]), name
    assert [m.training for m in clf.members_.template.modules()] == training


# --------------------------------------------------------------------------- recalibration


def bn_data(n=301, seed=3):
    g = torch.Generator().manual_seed(seed)
    return (2 * torch.randn(n, D, generator=g) + 0.5).numpy()


def bn_members():
    """S members with different weights and stale running statistics, and their stack."""
    modules = []
    for seed in range(S):
        with private_rng(seed):
            modules.append(BNMLP(D, C).eval())
    for i, module in enumerate(modules):
        bn = module.net[1]
        with torch.no_grad():
            bn.running_mean.fill_(i + 1.0)
            bn.running_var.fill_(3.0)
    stack = ParameterStack.from_members(
        copy.deepcopy(modules[0]), [module_tensors(m) for m in modules]
    )
    return stack, modules


def assert_matches_update_bn(stack, modules, batches):
    for i, module in enumerate(modules):
        ref = copy.deepcopy(module)
        update_bn(batches, ref)
        member = stack.member(i)
        for stat in ("running_mean", "running_var", "num_batches_tracked"):
            assert_close(member[f"net.1.{stat}"], getattr(ref.net[1], stat), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("by", ["iterator_valid__batch_size", "working_memory"])
def test_recalibration_merges_a_one_row_remainder(by):
    X = bn_data()
    stack, modules = bn_members()
    if by == "working_memory":
        row_bytes = bytes_per_row(stack, torch.tensor(X[:2]))
        clf = DeepEnsembleClassifier(BNMLP, working_memory=100.5 * row_bytes / MiB)
    else:
        clf = DeepEnsembleClassifier(BNMLP, iterator_valid__batch_size=100)
    batches = list(clf._batches(X, np.arange(len(X)), stack))
    assert [len(b) for b in batches] == [100, 100, 101]
    assert_array_equal(torch.cat(batches).numpy(), X)
    # The unmerged last batch of one row is what BatchNorm in training mode refuses.
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        update_bn([torch.tensor(X[:300]), torch.tensor(X[300:])], copy.deepcopy(modules[0]))
    assert recalibrate_batchnorm(stack, clf._batches(X, np.arange(len(X)), stack)) == 3
    assert_matches_update_bn(stack, modules, batches)


def test_recalibration_batches_hold_two_rows_at_least():
    X = bn_data(n=7)
    stack, modules = bn_members()
    clf = DeepEnsembleClassifier(BNMLP, iterator_valid__batch_size=1)
    batches = list(clf._batches(X, np.arange(len(X)), stack))
    assert [len(b) for b in batches] == [2, 2, 3]
    recalibrate_batchnorm(stack, batches)
    assert_matches_update_bn(stack, modules, batches)


def test_recalibration_without_batchnorm_keeps_a_one_row_remainder():
    X = bn_data(n=7)
    stack, _ = stack_of(Deep)
    clf = DeepEnsembleClassifier(Deep, iterator_valid__batch_size=3)
    assert [len(b) for b in clf._batches(X, np.arange(len(X)), stack)] == [3, 3, 1]


def test_fit_recalibrates_in_memory_sized_batches_not_training_batches():
    # 301 rows, training batches of 64; recalibration in batches of 100, 100, 101.
    X = bn_data()
    y = np.arange(len(X)) % C
    clf = SWAGClassifier(
        BNMLP,
        swa_start=1,
        max_epochs=2,
        n_predict_samples=S,
        max_rank=3,
        lr=0.05,
        batch_size=64,
        iterator_valid__batch_size=100,
        random_state=0,
    ).fit(X, y)
    batches = [torch.tensor(X[a:b]) for a, b in ((0, 100), (100, 200), (200, 301))]
    modules = []
    for i in range(clf.n_members_):
        with private_rng(0):
            module = BNMLP(D, C)
        module.load_state_dict({k: v.clone() for k, v in clf.members_.member(i).items()})
        modules.append(module)
    assert_matches_update_bn(clf.members_, modules, batches)
