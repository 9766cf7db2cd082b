"""Loss along paths and on planes (simplexens.inspection.surface) and their Displays.

Oracles: the members' own losses from ``predict_member_proba``, the closed form of an
orthonormal basis, and ``torch.optim.swa_utils.update_bn`` on a module loaded with the
point's parameters.
"""

import copy
import sys

import matplotlib
import numpy as np
import pytest
import torch
from nets import MLP, BatchNormMLP
from numpy.testing import assert_allclose
from sklearn.datasets import make_classification
from sklearn.exceptions import NotFittedError
from torch.optim.swa_utils import update_bn
from torch.testing import assert_close

from simplexens import CurveClassifier, DeepEnsembleClassifier, ESPROClassifier
from simplexens.inspection.surface import (
    _names,
    evaluate_points,
    loss_along_curve,
    loss_along_path,
    loss_on_plane,
    parameter_sets,
    plane_basis,
    plane_weights,
)
from simplexens.inspection.surface_display import PathDisplay, PlaneDisplay

matplotlib.use("Agg")

TRAINING = dict(max_epochs=4, lr=0.1, batch_size=64, random_state=0)


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(240, 8, n_informative=5, n_classes=3, random_state=0)
    return X.astype(np.float32), np.array(["a", "b", "c"])[y]


@pytest.fixture(scope="module")
def ensemble(data):
    return DeepEnsembleClassifier(MLP, n_estimators=3, **TRAINING).fit(*data)


def member_nll(estimator, X, y):
    proba = estimator.predict_member_proba(X)
    index = np.searchsorted(estimator.classes_, y)
    return -np.log(proba[:, np.arange(len(y)), index]).mean(axis=1)


def test_basis_is_orthonormal_and_anchors_project_to_themselves(ensemble):
    members = parameter_sets(ensemble)["members"]
    names = _names(ensemble)
    basis = plane_basis(*members[:3], names)
    assert_allclose(float(basis.u @ basis.u), 1.0, rtol=0, atol=1e-12)
    assert_allclose(float(basis.v @ basis.v), 1.0, rtol=0, atol=1e-12)
    assert_allclose(float(basis.u @ basis.v), 0.0, rtol=0, atol=1e-12)
    plane = loss_on_plane(ensemble, *_data(ensemble), grid_resolution=3)
    weights = plane_weights(basis, torch.tensor(plane.anchor_coords))
    assert_close(weights, torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-9)
    assert_allclose(plane.member_coords, plane.anchor_coords, rtol=0, atol=1e-9)


def _data(estimator):
    X, y = make_classification(240, 8, n_informative=5, n_classes=3, random_state=0)
    return X.astype(np.float32), estimator.classes_[y]


def test_plane_loss_at_an_anchor_is_the_members_own_loss(ensemble, data):
    members = parameter_sets(ensemble)["members"]
    basis = plane_basis(*members[:3], _names(ensemble))
    plane = loss_on_plane(ensemble, *data, grid_resolution=3)
    from simplexens.inspection.surface import _combine

    points = _combine(members[:3], plane_weights(basis, torch.tensor(plane.anchor_coords)))
    scores = evaluate_points(ensemble, points, *data)
    assert_allclose(scores.nll, member_nll(ensemble, *data), rtol=1e-5)


def test_path_ends_are_the_members_losses(ensemble, data):
    path = loss_along_path(ensemble, *data, start=0, end=2, n_points=5)
    expected = member_nll(ensemble, *data)
    assert_allclose(path.nll[[0, -1]], expected[[0, 2]], rtol=1e-5)
    assert_allclose(path.t, np.linspace(0, 1, 5))
    accuracy = (ensemble.predict_member_proba(data[0]).argmax(-1) == np.searchsorted(
        ensemble.classes_, data[1]
    )).mean(axis=1)  # fmt: skip
    assert_allclose(path.accuracy[[0, -1]], accuracy[[0, 2]])


def test_batchnorm_recalibration_along_a_path_equals_update_bn(data):
    X, y = data
    clf = DeepEnsembleClassifier(
        BatchNormMLP, n_estimators=2, iterator_valid__batch_size=64, **TRAINING
    ).fit(X, y)
    path = loss_along_path(clf, X, y, n_points=3)
    members = parameter_sets(clf)["members"]
    module = copy.deepcopy(clf.members_.template)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(0.5 * members[0][name] + 0.5 * members[1][name])
    loader = torch.utils.data.DataLoader(torch.tensor(X), batch_size=64)
    update_bn(loader, module)
    module.eval()
    with torch.no_grad():
        log_proba = module(torch.tensor(X)).double().log_softmax(-1)
    index = torch.tensor(np.searchsorted(clf.classes_, y))
    expected = -log_proba[torch.arange(len(y)), index].mean()
    assert_allclose(path.nll[1], float(expected), rtol=1e-5)


def test_curve_path_ends_are_the_curves_endpoints(data):
    curve = CurveClassifier(MLP, curve_epochs=2, n_predict_samples=2, **TRAINING).fit(*data)
    path = loss_along_curve(curve, *data, n_points=4)
    assert_allclose(path.nll[[0, -1]], member_nll(curve, *data), rtol=1e-5)


def test_espro_vertices_are_parameter_sets(data):
    espro = ESPROClassifier(
        MLP, n_modes=1, n_vertices=3, epochs_per_vertex=1, n_predict_samples=2, **TRAINING
    ).fit(*data)
    vertices = parameter_sets(espro)["vertices"]
    assert len(vertices) == 3
    for j, vertex in enumerate(vertices):
        for name, v in espro.simplex_vertices_.items():
            assert torch.equal(vertex[name], v[0, j])
    display = PlaneDisplay.from_simplex_face(espro, *data, grid_resolution=4)
    assert display.response.shape == (4, 4)
    display.figure_.canvas.draw()


def test_displays_hold_their_compute_functions_arrays(ensemble, data):
    plane = loss_on_plane(ensemble, *data, grid_resolution=4)
    display = PlaneDisplay.from_estimator(ensemble, *data, grid_resolution=4)
    assert_allclose(display.response, plane.nll)
    assert_allclose(display.anchor_coords, plane.anchor_coords)
    display.figure_.canvas.draw()
    errors = PlaneDisplay.from_estimator(ensemble, *data, grid_resolution=4, response="error")
    assert_allclose(errors.response, 1 - plane.accuracy)
    path = loss_along_path(ensemble, *data, n_points=4)
    shown = PathDisplay.from_estimator(ensemble, *data, n_points=4)
    assert_allclose(shown.nll, path.nll)
    assert_allclose(shown.accuracy, path.accuracy)
    shown.figure_.canvas.draw()
    import matplotlib.pyplot as plt

    _, ax = plt.subplots()
    assert PathDisplay(t=path.t, nll=path.nll, accuracy=path.accuracy).plot(ax=ax).ax_ is ax
    plt.close("all")


def test_bad_input(ensemble, data):
    members = parameter_sets(ensemble)["members"]
    middle = {n: 0.5 * (members[0][n] + members[1][n]) for n in members[0]}
    with pytest.raises(ValueError, match="collinear"):
        loss_on_plane(ensemble, *data, anchors=(0, 1, middle), grid_resolution=3)
    with pytest.raises(ValueError, match="grid_resolution must be an integer >= 2"):
        loss_on_plane(ensemble, *data, grid_resolution=1)
    with pytest.raises(ValueError, match="same parameter set"):
        loss_along_path(ensemble, *data, start=1, end=1)
    with pytest.raises(ValueError, match="no 'vertices'"):
        loss_along_path(ensemble, *data, start=("vertices", 0))
    with pytest.raises(ValueError, match="members\\[7\\] does not exist"):
        loss_along_path(ensemble, *data, end=7)
    with pytest.raises(ValueError, match="response must be one of"):
        PlaneDisplay.from_estimator(ensemble, *data, response="loss")
    with pytest.raises(ValueError, match="labels that the estimator was not fitted on"):
        loss_along_path(ensemble, data[0], np.array(["z"] * len(data[0])))
    with pytest.raises(NotFittedError):
        loss_along_path(DeepEnsembleClassifier(MLP), *data)
    with pytest.raises(TypeError, match="has no curve"):
        loss_along_curve(ensemble, *data)


def test_path_and_plane_displays_name_the_plot_extra_without_matplotlib(monkeypatch, ensemble):
    path = PathDisplay(t=[0, 1], nll=[1.0, 2.0], accuracy=[0.5, 0.6])
    plane = PlaneDisplay(
        xx0=np.zeros((2, 2)), xx1=np.zeros((2, 2)), response=np.ones((2, 2)),
        anchor_coords=np.zeros((3, 2)),
    )  # fmt: skip
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    for display in (path, plane):
        with pytest.raises(ImportError, match=r"simplexens\[plot\]"):
            display.plot()


def test_an_spro_chain_is_a_curve_through_its_connector(data):
    from simplexens import SPROClassifier

    spro = SPROClassifier(
        MLP, n_connectors=1, epochs_per_connector=1, n_predict_samples=2, **TRAINING
    ).fit(*data)
    chain = loss_along_curve(spro, *data, n_points=3)
    sets = parameter_sets(spro)["anchors"]  # w_0, w_1, θ_0
    expected = evaluate_points(spro, [sets[0], sets[2], sets[1]], *data)
    assert_allclose(chain.nll, expected.nll, rtol=1e-6)
