"""Members trained in other processes give the same ensemble as members trained here.

Worker processes run torch with one thread and this process with several, so float32
reductions may be summed in another order: predictions agree to float32 rounding, not bit for
bit.
"""

import joblib
import pytest
from nets import MLP
from numpy.testing import assert_allclose, assert_array_equal

from simplexens import DeepEnsembleClassifier

TOLERANCE = dict(rtol=1e-5, atol=1e-6)


def ensemble(**params):
    return DeepEnsembleClassifier(
        MLP, n_estimators=3, max_epochs=3, lr=0.1, batch_size=64, random_state=0, **params
    )


@pytest.fixture(scope="module")
def sequential(small_digits):
    X, y = small_digits
    clf = ensemble(n_jobs=1).fit(X, y)
    return clf.predict_member_proba(X), clf.epochs_spent_


def test_loky_processes_match_sequential(small_digits, sequential):
    X, y = small_digits
    clf = ensemble(n_jobs=2).fit(X, y)
    assert_allclose(clf.predict_member_proba(X), sequential[0], **TOLERANCE)
    assert clf.epochs_spent_ == sequential[1]


def test_dask_local_cluster_matches_sequential(small_digits, sequential):
    distributed = pytest.importorskip("distributed")
    X, y = small_digits
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
        joblib.parallel_backend("dask"),
        distributed.get_task_stream(client) as tasks,
    ):
        clf = ensemble().fit(X, y)
    # The three members ran as tasks on the cluster's two worker processes.
    assert len(tasks.data) >= 3
    assert len({task["worker"] for task in tasks.data}) == 2
    members = clf.predict_member_proba(X)
    assert_allclose(members, sequential[0], **TOLERANCE)
    assert_array_equal(members.argmax(-1), sequential[0].argmax(-1))


def test_ray_matches_sequential(small_digits, sequential):
    ray = pytest.importorskip("ray")
    from ray.util.joblib import register_ray

    X, y = small_digits
    register_ray()
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        with joblib.parallel_backend("ray"):
            clf = ensemble().fit(X, y)
    finally:
        ray.shutdown()
    assert_allclose(clf.predict_member_proba(X), sequential[0], **TOLERANCE)
