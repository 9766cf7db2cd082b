"""DeepEnsembleClassifier and the shared machinery, through the public API."""

import pickle

import numpy as np
import pytest
import torch
from nets import MLP, SmallCNN
from numpy.testing import assert_allclose, assert_array_equal
from scipy.special import logsumexp
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skorch.callbacks import EarlyStopping

from simplexens import DeepEnsembleClassifier
from simplexens.metrics import nll


def quick(module=MLP, **params):
    """A small, fast ensemble for API tests."""
    defaults = dict(n_estimators=2, max_epochs=3, lr=0.1, batch_size=64, random_state=0)
    return DeepEnsembleClassifier(module, **{**defaults, **params})


def test_predict_proba_is_the_mean_of_member_probabilities(small_digits):
    X, y = small_digits
    clf = quick(n_estimators=3).fit(X, y)
    members = clf.predict_member_proba(X)
    assert members.shape == (3, len(X), 10)
    assert_allclose(members.sum(axis=2), 1.0, rtol=1e-12)
    assert_allclose(clf.predict_proba(X), members.mean(axis=0), rtol=1e-12)
    assert_allclose(clf.predict_log_proba(X), logsumexp(np.log(members), axis=0) - np.log(3))
    assert_array_equal(clf.predict(X), clf.classes_[members.mean(axis=0).argmax(axis=1)])


def test_members_match_their_own_modules(small_digits):
    X, y = small_digits
    clf = quick(n_estimators=2).fit(X, y)
    probs = []
    for i in range(clf.n_members_):
        module = MLP(64, 10)
        module.load_state_dict(clf.members_.member(i))
        with torch.no_grad():
            probs.append(module.eval()(torch.tensor(X)).softmax(-1).double().numpy())
    assert_allclose(clf.predict_member_proba(X), np.stack(probs), rtol=1e-5, atol=1e-7)


def test_fitted_attributes(small_digits):
    X, y = small_digits
    clf = quick(n_estimators=3, max_epochs=4).fit(X, y)
    assert clf.n_members_ == 3
    assert clf.epochs_spent_ == 3 * 4
    assert clf.n_features_in_ == 64
    assert_array_equal(clf.classes_, np.unique(y))


def test_early_stopping_is_counted_in_epochs_spent(small_digits):
    # A threshold no epoch can meet: each member improves once (on its first epoch) and then
    # stops after `patience` epochs without improvement.
    X, y = small_digits
    stop = EarlyStopping(monitor="train_loss", patience=1, threshold=1e9, sink=lambda *_: None)
    clf = quick(n_estimators=2, max_epochs=10, callbacks=[("stop", stop)]).fit(X, y)
    assert clf.epochs_spent_ == 2 * 2
    clf.set_params(callbacks__stop__patience=3).fit(X, y)
    assert clf.epochs_spent_ == 2 * 4


def test_same_seed_same_predictions_and_members_differ(small_digits):
    X, y = small_digits
    a = quick(n_estimators=3).fit(X, y).predict_member_proba(X)
    b = quick(n_estimators=3).fit(X, y).predict_member_proba(X)
    assert_array_equal(a, b)
    for i in range(3):
        for j in range(i):
            assert np.abs(a[i] - a[j]).max() > 1e-3
    c = quick(n_estimators=3, random_state=1).fit(X, y).predict_member_proba(X)
    assert np.abs(a - c).max() > 1e-3


def test_fit_leaves_torch_global_rng_alone(small_digits):
    X, y = small_digits
    before = torch.get_rng_state()
    quick().fit(X, y)
    torch.testing.assert_close(torch.get_rng_state(), before)


def test_pickle_round_trip(small_digits):
    X, y = small_digits
    clf = quick().fit(X, y)
    restored = pickle.loads(pickle.dumps(clf))
    assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))


def test_clone_and_set_params_with_routed_parameters(small_digits):
    X, y = small_digits
    clf = quick(module__hidden=8, optimizer__momentum=0.9)
    params = clf.get_params()
    assert params["module__hidden"] == 8
    assert params["optimizer__momentum"] == 0.9
    twin = clone(clf)
    assert twin.get_params()["module__hidden"] == 8
    twin.set_params(module__hidden=24, optimizer__momentum=0.5, n_estimators=1)
    assert (twin.module__hidden, twin.optimizer__momentum, twin.n_estimators) == (24, 0.5, 1)
    assert clf.module__hidden == 8
    twin.fit(X, y)
    assert twin.members_.tensors["net.1.weight"].shape == (1, 24, 64)


def test_optimizer_arguments_reach_the_optimizer(small_digits):
    # Oracle: with lr so small that nothing moves, weight decay alone changes the weights,
    # so momentum-free SGD with weight_decay must differ from plain SGD.
    X, y = small_digits
    plain = quick(n_estimators=1).fit(X, y).predict_proba(X)
    decayed = quick(n_estimators=1, optimizer__weight_decay=1.0).fit(X, y).predict_proba(X)
    assert np.abs(plain - decayed).max() > 1e-3


def test_grid_search_over_method_training_and_module_parameters(small_digits):
    X, y = small_digits
    grid = GridSearchCV(
        quick(max_epochs=2),
        {"n_estimators": [1, 2], "lr": [0.05, 0.2], "module__hidden": [8, 16]},
        cv=2,
    ).fit(X, y)
    assert len(grid.cv_results_["params"]) == 8
    assert set(grid.best_params_) == {"n_estimators", "lr", "module__hidden"}
    best, chosen = grid.best_estimator_, grid.best_params_
    assert best.members_.tensors["net.1.weight"].shape == (
        chosen["n_estimators"],
        chosen["module__hidden"],
        64,
    )
    assert best.lr == chosen["lr"]
    # Each candidate was really trained with its own parameters: scores are not all equal.
    assert len(set(np.round(grid.cv_results_["mean_test_score"], 6))) > 1


def test_pipeline_with_scaler(digits):
    X_train, X_test, y_train, y_test = digits
    pipe = make_pipeline(StandardScaler(), quick(max_epochs=5)).fit(X_train, y_train)
    assert pipe.score(X_test, y_test) > 0.85


def test_temperature_calibration(small_digits):
    X, y = small_digits
    calibrated = CalibratedClassifierCV(quick(), method="temperature", cv=2).fit(X, y)
    proba = calibrated.predict_proba(X)
    assert proba.shape == (len(X), 10)
    assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-10)


def test_string_labels_come_back(small_digits):
    # Names that sort like the integers they stand for: the encoded problem is identical, so
    # the string model must predict exactly the names of the integer model's predictions.
    X, y = small_digits
    names = np.array([f"digit-{d}" for d in range(10)])
    clf = quick().fit(X, names[y])
    assert_array_equal(clf.classes_, names)
    pred = clf.predict(X)
    assert pred.dtype.kind == "U"
    assert_array_equal(pred, names[quick().fit(X, y).predict(X)])


def test_pandas_dataframe(small_digits):
    pd = pytest.importorskip("pandas")
    X, y = small_digits
    frame = pd.DataFrame(X, columns=[f"px{i}" for i in range(64)])
    clf = quick().fit(frame, pd.Series(y))
    assert_array_equal(clf.feature_names_in_, frame.columns)
    assert_allclose(clf.predict_proba(frame), quick().fit(X, y).predict_proba(X), rtol=1e-12)


def test_images_with_batchnorm_cnn(digits):
    X_train, X_test, y_train, y_test = digits
    images = X_train.reshape(-1, 1, 8, 8)
    clf = DeepEnsembleClassifier(
        SmallCNN, n_estimators=2, max_epochs=4, lr=0.1, batch_size=64, random_state=0
    ).fit(images, y_train)
    assert clf.n_features_in_ == 1
    assert clf.predict_member_proba(X_test.reshape(-1, 1, 8, 8)).shape == (2, len(X_test), 10)
    assert clf.score(X_test.reshape(-1, 1, 8, 8), y_test) > 0.85
    # BatchNorm running statistics were learnt per member, not left at their initial values.
    running_var = clf.members_.tensors["features.1.running_var"]
    assert torch.all(running_var != 1.0)
    assert (running_var[0] - running_var[1]).abs().max() > 0


def test_module_instance_is_copied_and_reinitialised(small_digits):
    X, y = small_digits
    instance = MLP(64, 10)
    original = {k: v.clone() for k, v in instance.state_dict().items()}
    clf = DeepEnsembleClassifier(instance, n_estimators=2, max_epochs=1, random_state=0)
    clf.fit(X, y)
    for name, value in instance.state_dict().items():
        torch.testing.assert_close(value, original[name])
    stacked = clf.members_.tensors["net.1.weight"]
    assert (stacked[0] - stacked[1]).abs().max() > 1e-3


def test_failed_fit_leaves_estimator_unfitted_and_data_unmodified(small_digits):
    X, y = small_digits
    clf = quick().fit(X, y)
    X_bad = X.copy()
    X_bad[0, 0] = np.nan
    X_before, y_before = X_bad.copy(), y.copy()
    with pytest.raises(ValueError, match="NaN"):
        clf.fit(X_bad, y)
    assert_array_equal(X_bad, X_before)
    assert_array_equal(y, y_before)
    with pytest.raises(NotFittedError):
        clf.predict(X)
    assert not [k for k in vars(clf) if k.endswith("_")]


def test_fit_does_not_modify_float32_input(small_digits):
    X, y = small_digits
    X = np.ascontiguousarray(X, dtype=np.float32)
    X_before = X.copy()
    quick().fit(X, y).predict_proba(X)
    assert_array_equal(X, X_before)


class WrongWidth(torch.nn.Module):
    def __init__(self, n_features_in):
        super().__init__()
        self.linear = torch.nn.Linear(n_features_in, 3)

    def forward(self, x):
        return self.linear(x)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (dict(X=np.inf), ValueError, "infinity"),
        (dict(X=np.nan), ValueError, "NaN"),
        (dict(X="1d"), ValueError, "Expected 2D array"),
        (dict(y="one class"), ValueError, "at least 2 classes.*only one class: 3"),
        (dict(y="continuous"), ValueError, "Unknown label type"),
        (dict(module=WrongWidth), ValueError, r"logits of shape.*\(8, 10\).*returned \(8, 3\)"),
        (dict(module=MLP, module__n_features_in=5), ValueError, "module failed on an input"),
        (dict(module=MLP, module__width=5), TypeError, r"could not build module MLP\("),
        (dict(module="MLP"), TypeError, "module must be an nn.Module subclass"),
        (dict(modul__hidden=3), TypeError, "unexpected parameter.*'modul__hidden'"),
        (dict(n_estimators=0), ValueError, "n_estimators must be .*>= 1.*, got 0"),
        (dict(n_estimators=2.5), TypeError, "n_estimators must be an integer"),
        (dict(lr=0.0), ValueError, "lr must be .*> 0.*, got 0.0"),
        (dict(max_epochs=0), ValueError, "max_epochs must be .*>= 1.*, got 0"),
        (dict(batch_size=0), ValueError, "batch_size must be .*>= 1.*, got 0"),
        (dict(device="gpu"), ValueError, "device='gpu' is not a torch device"),
    ],
)
def test_bad_input_fails_in_fit_with_a_clear_message(small_digits, change, error, match):
    X, y = small_digits
    X, y = X.copy(), y.copy()
    change = dict(change)
    if "X" in change:
        value = change.pop("X")
        X = X[:, 0] if value == "1d" else X
        if value != "1d":
            X[3, 5] = value
    if "y" in change:
        value = change.pop("y")
        y = np.full_like(y, 3) if value == "one class" else y + 0.5
    clf = quick(**change)
    with pytest.raises(error, match=match):
        clf.fit(X, y)
    with pytest.raises(NotFittedError):
        clf.predict_proba(X if X.ndim == 2 else X[:, None])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error(small_digits):
    X, y = small_digits
    with pytest.raises(ValueError, match="CUDA is not available"):
        quick(device="cuda").fit(X, y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(small_digits):
    X, y = small_digits
    cpu = quick().fit(X, y).predict_proba(X)
    gpu = quick(device="cuda").fit(X, y)
    assert gpu.members_.device.type == "cuda"
    assert_allclose(gpu.predict_proba(X), cpu, atol=1e-3)
    restored = pickle.loads(pickle.dumps(gpu))
    assert_array_equal(restored.predict_proba(X), gpu.predict_proba(X))


def test_predict_batches_do_not_change_results(small_digits):
    X, y = small_digits
    clf = quick().fit(X, y)
    whole = clf.predict_proba(X)
    clf.set_params(iterator_valid__batch_size=7)
    assert_allclose(clf.predict_proba(X), whole, rtol=1e-6, atol=1e-9)


def test_ensemble_beats_its_members_on_digits(digits):
    # The ensemble's NLL is below its members' mean NLL (Jensen: this holds for the mixture on
    # every sample, so a failure means prediction is not averaging probabilities), and its
    # accuracy is at least the members' mean accuracy.
    X_train, X_test, y_train, y_test = digits
    clf = DeepEnsembleClassifier(
        MLP,
        module__hidden=64,
        n_estimators=5,
        max_epochs=15,
        lr=0.05,
        optimizer__momentum=0.9,
        batch_size=64,
        random_state=0,
    ).fit(X_train, y_train)
    members = clf.predict_member_proba(X_test)
    member_nll = np.mean([nll(y_test, p, labels=clf.classes_) for p in members])
    member_acc = np.mean([np.mean(p.argmax(1) == y_test) for p in members])
    ensemble_nll = nll(y_test, clf.predict_proba(X_test), labels=clf.classes_)
    assert ensemble_nll < member_nll
    assert clf.score(X_test, y_test) >= member_acc
    assert clf.score(X_test, y_test) > 0.95
