"""Subspace inference: the bases against independent computations, z = 0 against the SWA
solution, and the estimator's scikit-learn behaviour and errors."""

import pickle

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from sklearn.datasets import make_classification
from sklearn.decomposition import PCA
from sklearn.model_selection import GridSearchCV

from simplexens import CurveClassifier, SubspaceClassifier, SWAGClassifier
from simplexens.datasets import MLP
from simplexens.geometry.subspace import curve_basis, flatten, pca_basis, random_basis

X, Y = make_classification(120, 6, n_informative=4, n_redundant=0, n_classes=3, random_state=4)
X = X.astype(np.float32)
COMMON = {"max_epochs": 4, "swa_start": 2, "swa_lr": 0.05, "lr": 0.1, "batch_size": 32}


def _projector(rows):
    """The orthogonal projector onto the span of ``rows``."""
    q, _ = np.linalg.qr(np.asarray(rows, dtype=np.float64).T)
    return q @ q.T


def test_pca_basis_spans_sklearns_principal_directions():
    rng = np.random.RandomState(0)
    deviations = rng.standard_normal((12, 40)) * np.linspace(3, 0.1, 40)
    basis = pca_basis(torch.from_numpy(deviations), 4).numpy()
    reference = PCA(n_components=4, svd_solver="full").fit(deviations)
    assert_allclose(_projector(basis), _projector(reference.components_), atol=1e-10)
    # scaled by the singular values over sqrt(K - 1): the components' standard deviations
    assert_allclose(np.linalg.norm(basis, axis=1), np.sqrt(reference.explained_variance_))


def test_random_basis_is_orthogonal_with_the_given_norm():
    basis = random_basis(5, 300, 2.5, torch.Generator().manual_seed(0)).numpy()
    assert_allclose(basis @ basis.T, 2.5**2 * np.eye(5), atol=1e-10)


def test_curve_basis_contains_the_three_anchors():
    rng = np.random.RandomState(1)
    start, bend, end = (torch.from_numpy(rng.standard_normal(30)) for _ in range(3))
    shift, basis = curve_basis(start, bend, end)
    projector = _projector(basis.numpy())
    for anchor in (start, bend, end):
        offset = (anchor - shift).numpy()
        assert_allclose(projector @ offset, offset, atol=1e-10)
    assert abs(float(basis[0] @ basis[1])) < 1e-10  # orthogonal directions


def test_z_zero_is_the_swa_solution():
    model = SubspaceClassifier(MLP, n_predict_samples=2, rank=2, random_state=0, **COMMON)
    model.fit(X, Y)
    swa = SWAGClassifier(MLP, covariance="none", random_state=0, **COMMON).fit(X, Y)
    (mode,) = model.mode_state_dicts()
    (swa_mode,) = swa.mode_state_dicts()
    names = [n for n, _ in MLP(6, 3).named_parameters()]
    for name in names:
        torch.testing.assert_close(mode[name], swa_mode[name], rtol=0, atol=0)
    shift = flatten(swa_mode, names)
    torch.testing.assert_close(model.subspace_shift_, shift, rtol=0, atol=0)


@pytest.mark.parametrize("sampler", ["ess", "vi"])
@pytest.mark.parametrize("subspace", ["pca", "random"])
def test_fits_and_predicts(subspace, sampler):
    model = SubspaceClassifier(
        MLP, subspace=subspace, sampler=sampler, rank=3, n_predict_samples=6, vi_iterations=20,
        random_state=0, **COMMON,
    ).fit(X, Y)  # fmt: skip
    proba = model.predict_proba(X)
    assert proba.shape == (len(X), 3)
    assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert model.n_members_ == 6
    assert model.posterior_samples_.shape == (6, 3)
    assert model.epochs_spent_ == COMMON["max_epochs"]
    if sampler == "ess":
        assert model.ess_shrinks_ is not None and (np.asarray(model.ess_shrinks_) >= 0).all()
    else:
        assert np.isfinite(model.vi_elbo_).all() and len(model.vi_elbo_) == 20
    again = pickle.loads(pickle.dumps(model))
    assert_allclose(again.predict_proba(X), proba, rtol=0, atol=0)


def test_curve_subspace_from_a_fitted_curve():
    curve = CurveClassifier(MLP, curve_epochs=2, random_state=0, max_epochs=3).fit(X, Y)
    model = SubspaceClassifier(
        MLP, subspace="curve", init_modes=curve, n_predict_samples=4, random_state=0
    ).fit(X, Y)
    assert model.epochs_spent_ == 0
    assert model.subspace_basis_.shape[0] == 2
    names = list(curve.curve_anchors_)
    projector = _projector(model.subspace_basis_.numpy())
    for i in range(3):
        anchor = flatten({n: a[i] for n, a in curve.curve_anchors_.items()}, names)
        offset = (anchor - model.subspace_shift_).numpy()
        assert_allclose(projector @ offset, offset, atol=1e-8)


def test_same_random_state_same_predictions():
    make = lambda: SubspaceClassifier(  # noqa: E731
        MLP, rank=2, n_predict_samples=4, random_state=3, **COMMON
    )
    assert_allclose(make().fit(X, Y).predict_proba(X), make().fit(X, Y).predict_proba(X))


def test_grid_search_over_subspace_rank_and_temperature():
    grid = GridSearchCV(
        SubspaceClassifier(MLP, n_predict_samples=2, random_state=0, **COMMON),
        {"subspace": ["pca", "random"], "rank": [1, 2], "temperature": [None, 1.0]},
        cv=2,
    ).fit(X, Y)
    assert set(grid.best_params_) == {"subspace", "rank", "temperature"}


BAD = {
    "rank below 1": ({"rank": 0}, "rank"),
    "rank above the deviations": ({"rank": 20, "max_rank": 20}, "rank"),
    "unknown subspace": ({"subspace": "hessian"}, "subspace"),
    "unknown sampler": ({"sampler": "hmc"}, "sampler"),
    "curve without a curve": ({"subspace": "curve"}, "needs a curve"),
    "non-positive temperature": ({"temperature": 0.0}, "temperature"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_parameters_fail_in_fit(case):
    params, words = BAD[case]
    with pytest.raises(ValueError, match=words):
        SubspaceClassifier(MLP, **{**COMMON, **params}).fit(X, Y)


def test_rank_above_the_collected_deviations_is_an_error():
    """max_rank allows it, but the SWA phase collects fewer deviations than rank + 1."""
    model = SubspaceClassifier(
        MLP, rank=5, max_rank=20, collect_every=None, **{**COMMON, "max_epochs": 5}
    )
    with pytest.raises(ValueError, match="deviations"):
        model.fit(X, Y)


def test_random_subspace_with_one_deviation_is_a_clear_error():
    model = SubspaceClassifier(
        MLP, subspace="random", rank=2, collect_every=None, **{**COMMON, "max_epochs": 3}
    )
    with pytest.raises(ValueError, match="2 collected deviations or more; there are 1"):
        model.fit(X, Y)
