"""init_modes through the estimators: trained networks to start from, and mode_state_dicts().

The oracle throughout is the given network itself: what an estimator starts from must be
bit-identical to it (``torch.equal``), and what was given must be bit-identical afterwards.
"""

import copy
import math

import numpy as np
import pytest
import torch
from nets import MLP, BatchNormMLP
from numpy.testing import assert_array_equal
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted
from torch.optim.swa_utils import update_bn

from simplexens import (
    CurveClassifier,
    DeepEnsembleClassifier,
    ESPROClassifier,
    FGEClassifier,
    SPROClassifier,
    SWAGClassifier,
)

BATCH = 64  # 300 rows: 5 training batches per epoch, the last of 44 rows
TRAINING = dict(lr=0.1, batch_size=BATCH, random_state=0)
N_VERTICES, EPOCHS_PER_VERTEX = 3, 1


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(
        300, 10, n_informative=6, n_redundant=2, n_classes=3, random_state=0
    )
    return X.astype(np.float32), y


def snapshot(tensors):
    return {name: t.detach().clone() for name, t in tensors.items()}


def assert_bit_identical(tensors, before):
    assert set(tensors) == set(before)
    for name, t in tensors.items():
        assert t.dtype == before[name].dtype, name
        assert torch.equal(t, before[name]), name


def fitted_attributes(clf):
    return [k for k in vars(clf) if k.endswith("_") and not k.startswith("_")]


def build(cls, *args, **kwargs):
    """A module, leaving torch's global random state alone."""
    with torch.random.fork_rng():
        torch.manual_seed(123)
        return cls(*args, **kwargs)


@pytest.fixture(scope="module")
def ensemble(data):
    """A fitted 2-member deep ensemble, its tensors and probabilities right after fit."""
    X, y = data
    clf = DeepEnsembleClassifier(MLP, n_estimators=2, max_epochs=3, **TRAINING).fit(X, y)
    return clf, snapshot(clf.members_.tensors), clf.predict_proba(X)


def assert_ensemble_unchanged(data, ensemble):
    clf, tensors, proba = ensemble
    assert_bit_identical(clf.members_.tensors, tensors)
    assert_array_equal(clf.predict_proba(data[0]), proba)


def espro(**params):
    defaults = dict(
        n_modes=2,
        n_vertices=N_VERTICES,
        epochs_per_vertex=EPOCHS_PER_VERTEX,
        n_predict_samples=2,
        max_epochs=3,
        **TRAINING,
    )
    return ESPROClassifier(MLP, **{**defaults, **params})


# --------------------------------------------------------------------------- ESPRO


@pytest.fixture(scope="module")
def espro_from_estimator(data, ensemble):
    return espro(init_modes=ensemble[0]).fit(*data)


def test_espro_starts_from_a_fitted_deep_ensemble(data, ensemble, espro_from_estimator):
    clf = espro_from_estimator
    source = ensemble[0]
    for name, vertices in clf.simplex_vertices_.items():
        assert vertices.shape[:2] == (2, N_VERTICES)
        assert torch.equal(vertices[:, 0], source.members_.tensors[name].cpu()), name
        assert not torch.equal(vertices[:, 1], vertices[:, 0])
    assert clf.epochs_spent_ == 2 * (N_VERTICES - 1) * EPOCHS_PER_VERTEX
    assert_ensemble_unchanged(data, ensemble)


@pytest.mark.parametrize("form", ["modules", "state_dicts"])
def test_espro_starts_from_modules_or_state_dicts(data, ensemble, espro_from_estimator, form):
    states = ensemble[0].mode_state_dicts()
    if form == "modules":
        given = [build(MLP, 10, 3) for _ in states]
        for module, state in zip(given, states, strict=True):
            module.load_state_dict(state)
        before = [snapshot(module.state_dict()) for module in given]
    else:
        given = states
        before = [snapshot(state) for state in states]
    clf = espro(init_modes=given).fit(*data)
    for name, vertices in clf.simplex_vertices_.items():
        for i, state in enumerate(before):
            assert torch.equal(vertices[i, 0], state[name]), name
        # Same networks, same random_state: the same simplexes as from the estimator.
        assert torch.equal(vertices, espro_from_estimator.simplex_vertices_[name]), name
    assert clf.epochs_spent_ == 2 * (N_VERTICES - 1) * EPOCHS_PER_VERTEX
    after = [m.state_dict() for m in given] if form == "modules" else given
    for state, saved in zip(after, before, strict=True):
        assert_bit_identical(state, saved)
    assert_ensemble_unchanged(data, ensemble)


# --------------------------------------------------------------------------- DeepEnsemble


def test_deep_ensemble_from_estimator_trains_nothing(data, ensemble):
    X, y = data
    source, tensors, proba = ensemble
    clf = DeepEnsembleClassifier(MLP, n_estimators=2, init_modes=source, **TRAINING).fit(X, y)
    assert clf.epochs_spent_ == 0
    assert_bit_identical(clf.members_.tensors, tensors)
    assert_array_equal(clf.predict_proba(X), proba)
    assert_ensemble_unchanged(data, ensemble)


def test_deep_ensemble_recalibrates_given_batchnorm_statistics_exactly(data):
    X, y = data
    source = DeepEnsembleClassifier(BatchNormMLP, n_estimators=2, max_epochs=2, **TRAINING).fit(
        X, y
    )
    before = snapshot(source.members_.tensors)
    clf = DeepEnsembleClassifier(
        BatchNormMLP,
        n_estimators=2,
        init_modes=source,
        recalibrate_bn=True,
        iterator_valid__batch_size=BATCH,
        **TRAINING,
    ).fit(X, y)
    assert clf.epochs_spent_ == 0
    # Oracle: torch's update_bn (momentum=None: the cumulative average) on each given network,
    # one pass over all training rows in the batches prediction uses.
    loader = [torch.from_numpy(X[i : i + BATCH]) for i in range(0, len(X), BATCH)]
    for i in range(2):
        module = build(BatchNormMLP, 10, 3)
        module.load_state_dict(source.members_.member(i))
        update_bn(loader, module)
        state = clf.members_.member(i)
        bn = module.net[1]
        torch.testing.assert_close(
            state["net.1.running_mean"], bn.running_mean, rtol=1e-4, atol=1e-5
        )
        torch.testing.assert_close(
            state["net.1.running_var"], bn.running_var, rtol=1e-4, atol=1e-5
        )
        assert (
            int(state["net.1.num_batches_tracked"]) == int(bn.num_batches_tracked) == len(loader)
        )
        for name, t in source.members_.member(i).items():
            if "net.1.running" not in name and "num_batches" not in name:
                assert torch.equal(state[name], t), name  # the parameters, as given
    # The source's own statistics (running averages from training) differ and are untouched.
    assert not torch.allclose(
        clf.members_.tensors["net.1.running_mean"], before["net.1.running_mean"]
    )
    assert_bit_identical(source.members_.tensors, before)


# --------------------------------------------------------------------------- FGE, SWAG


@pytest.fixture(scope="module")
def fge(data, ensemble):
    state = ensemble[0].mode_state_dicts()[0]
    before = snapshot(state)
    clf = FGEClassifier(
        MLP,
        init_modes=[state],
        n_snapshots=2,
        cycle_length=1,
        alpha1=0.05,
        alpha2=0.01,
        max_epochs=3,
        **TRAINING,
    ).fit(*data)
    return clf, state, before


def test_fge_from_one_state_dict_runs_only_the_cycles(data, fge):
    clf, state, before = fge
    # 5 batches per epoch: cycles of C = 5 steps, snapshots at steps 2 and 7; the cyclic phase
    # runs ceil(8 / 5) = 2 whole epochs and no pretraining.
    n_batches = math.ceil(len(data[0]) / BATCH)
    cycle = max(2, round(1 * n_batches))
    last = (2 - 1) * cycle + cycle // 2
    assert_array_equal(clf.snapshot_steps_, [cycle // 2, last])
    assert clf.epochs_spent_ == math.ceil((last + 1) / n_batches) == 2
    assert len(clf.learning_rates_) == clf.epochs_spent_ * n_batches
    first = clf.members_.member(0)
    assert any(not torch.equal(first[name].cpu(), t) for name, t in before.items())
    assert_bit_identical(state, before)


@pytest.fixture(scope="module")
def swag(data, ensemble):
    return SWAGClassifier(
        MLP,
        n_modes=2,
        init_modes=ensemble[0],
        max_epochs=4,
        swa_start=2,
        swa_lr=0.05,
        max_rank=5,
        n_predict_samples=3,
        collect_every=None,  # once per epoch: the count of collections is the SWA epochs
        **TRAINING,
    ).fit(*data)


def test_swag_from_estimator_runs_only_the_swa_phase(data, ensemble, swag):
    assert swag.epochs_spent_ == 2 * (4 - 2)
    assert [m.n_collected for m in swag.swag_moments_] == [4 - 2, 4 - 2]
    assert_ensemble_unchanged(data, ensemble)


# --------------------------------------------------------------------------- mode_state_dicts


def test_espro_mode_state_dicts_are_vertex_zero_and_the_modes_buffers(data):
    X, y = data
    params = dict(n_estimators=2, max_epochs=2, **TRAINING)
    clf = ESPROClassifier(
        BatchNormMLP,
        n_modes=2,
        n_vertices=2,
        epochs_per_vertex=1,
        n_predict_samples=2,
        max_epochs=2,
        **TRAINING,
    ).fit(X, y)
    modes = clf.mode_state_dicts()
    assert len(modes) == 2
    with torch.random.fork_rng():
        names = set(BatchNormMLP(10, 3).state_dict())
    for i, mode in enumerate(modes):
        assert set(mode) == names
        for name, vertices in clf.simplex_vertices_.items():
            assert torch.equal(mode[name], vertices[i, 0]), name
        for name, t in clf.mode_buffers_[i].items():
            assert torch.equal(mode[name], t), name
    # Oracle for the buffers: with the same random_state each mode is the network a deep
    # ensemble trains, BatchNorm statistics included (not those of the simplex's points).
    reference = DeepEnsembleClassifier(BatchNormMLP, **params).fit(X, y)
    for i, mode in enumerate(modes):
        assert_bit_identical(mode, {n: t.cpu() for n, t in reference.members_.member(i).items()})
    # The parameters are copies: writing into them leaves the estimator alone. (The buffers
    # are not: see test_mode_state_dicts_buffers_are_copies.)
    vertices = snapshot(clf.simplex_vertices_)
    modes[0]["net.1.weight"].add_(1.0)
    assert_bit_identical(clf.simplex_vertices_, vertices)


#: Tiny fits of each estimator with modes of their own, on a module with BatchNorm buffers.
WITH_MODES = {
    "ESPRO": lambda: ESPROClassifier(
        BatchNormMLP, n_modes=1, n_vertices=2, epochs_per_vertex=1, n_predict_samples=2
    ),
    "SPRO": lambda: SPROClassifier(
        BatchNormMLP, n_connectors=1, epochs_per_connector=1, n_predict_samples=2
    ),
    "Curve": lambda: CurveClassifier(BatchNormMLP, curve_epochs=1, n_predict_samples=2),
    "SWAG": lambda: SWAGClassifier(BatchNormMLP, swa_start=1, n_predict_samples=2),
}


@pytest.mark.parametrize("name", list(WITH_MODES))
def test_mode_state_dicts_buffers_are_copies(data, name):
    clf = WITH_MODES[name]().set_params(max_epochs=2, **TRAINING).fit(*data)
    before = [snapshot(buffers) for buffers in clf.mode_buffers_]
    for mode in clf.mode_state_dicts():
        for t in mode.values():
            t.add_(1)
    for buffers, saved in zip(clf.mode_buffers_, before, strict=True):
        assert_bit_identical(buffers, saved)


@pytest.fixture(scope="module")
def spro(data, ensemble):
    return SPROClassifier(
        MLP,
        n_modes=2,
        n_connectors=1,
        epochs_per_connector=1,
        n_predict_samples=2,
        init_modes=ensemble[0],
        **TRAINING,
    ).fit(*data)


@pytest.fixture(scope="module")
def curve(data, ensemble):
    return CurveClassifier(
        MLP, curve_epochs=1, n_predict_samples=2, init_modes=ensemble[0], **TRAINING
    ).fit(*data)


def test_spro_curve_and_swag_mode_state_dicts(ensemble, spro, curve, swag):
    source = ensemble[0]
    given = [{n: t.cpu() for n, t in source.members_.member(i).items()} for i in range(2)]
    spro_modes, curve_ends, swa_means = (
        spro.mode_state_dicts(),
        curve.mode_state_dicts(),
        swag.mode_state_dicts(),
    )
    assert len(spro_modes) == len(curve_ends) == len(swa_means) == 2
    for i in range(2):
        assert_bit_identical(spro_modes[i], {n: v[i] for n, v in spro.complex_vertices_.items()})
        assert_bit_identical(spro_modes[i], given[i])
        end = 0 if i == 0 else -1
        assert_bit_identical(curve_ends[i], {n: a[end] for n, a in curve.curve_anchors_.items()})
        assert_bit_identical(curve_ends[i], given[i])
        mean = swag.swag_moments_[i].mean
        assert_bit_identical(swa_means[i], {n: t.cpu() for n, t in mean.items()})
        assert not torch.equal(swa_means[i]["net.1.weight"], given[i]["net.1.weight"])


def test_espro_round_trip_through_mode_state_dicts_and_clone(data, espro_from_estimator):
    states = espro_from_estimator.mode_state_dicts()
    clf = clone(espro(n_vertices=2, init_modes=states)).fit(*data)
    assert clf.epochs_spent_ == 2 * 1 * EPOCHS_PER_VERTEX
    for name, vertices in clf.simplex_vertices_.items():
        assert torch.equal(vertices[:, 0], espro_from_estimator.simplex_vertices_[name][:, 0])


# --------------------------------------------------------------------------- errors


def _missing_bias(ensemble):
    first, second = ensemble[0].mode_state_dicts()
    del second["net.3.bias"]
    return [first, second]


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("three networks", r"init_modes has 3 networks but n_modes=2 in ESPROClassifier"),
        ("missing name", r"init_modes\[1\] does not match .*1 missing \('net.3.bias'\)"),
        (
            "other width",
            r"tensor 'net.1.weight' of init_modes\[0\] has shape \(8, 10\) but the module's "
            r"has shape \(16, 10\)",
        ),
        ("unfitted", r"init_modes is an unfitted estimator \(DeepEnsembleClassifier\)"),
    ],
    ids=["three networks", "missing name", "other width", "unfitted"],
)
def test_bad_init_modes_fail_in_fit_and_leave_it_unfitted(
    data, ensemble, espro_from_estimator, case, match
):
    X, y = data
    states = ensemble[0].mode_state_dicts()
    init_modes = {
        "three networks": lambda: [*states, states[0]],
        "missing name": lambda: _missing_bias(ensemble),
        "other width": lambda: [build(MLP, 10, 3, hidden=8), states[1]],
        "unfitted": lambda: DeepEnsembleClassifier(MLP, n_estimators=2),
    }[case]()
    clf = copy.deepcopy(espro_from_estimator).set_params(init_modes=init_modes)
    assert fitted_attributes(clf)
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y)
    assert fitted_attributes(clf) == []
    with pytest.raises(NotFittedError):
        clf.predict(X)
    assert_ensemble_unchanged(data, ensemble)


def test_fge_refuses_two_networks(data, ensemble, fge):
    X, y = data
    clf = copy.deepcopy(fge[0]).set_params(init_modes=ensemble[0].mode_state_dicts())
    with pytest.raises(
        ValueError,
        match=r"init_modes has 2 networks but FGEClassifier starts "
        r"from exactly 1",
    ):
        clf.fit(X, y)
    assert fitted_attributes(clf) == []
    with pytest.raises(NotFittedError):
        clf.predict(X)


def test_clone_drops_the_fitted_state_of_an_estimator_given_as_init_modes(data, ensemble):
    X, y = data
    source = ensemble[0]
    cloned = clone(espro(init_modes=source))
    assert isinstance(cloned.init_modes, DeepEnsembleClassifier)
    assert cloned.init_modes is not source
    assert fitted_attributes(cloned.init_modes) == []
    with pytest.raises(
        ValueError,
        match=r"init_modes is an unfitted estimator \(DeepEnsembleClassifier\); fit it first",
    ):
        cloned.fit(X, y)
    assert fitted_attributes(cloned) == []
    check_is_fitted(source)  # the original keeps its members
    assert_ensemble_unchanged(data, ensemble)
