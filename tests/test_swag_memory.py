"""Memory of SWAG statistics: what is held and pickled grows with the collections, not K.

Oracles: the bytes of the deviations themselves (rows × numbers × item size) for the storage
behind the deviation buffer and for the growth of pickles; a small ``max_rank`` for which
allocating all K rows up front costs nothing, against ``max_rank=10**6`` for which it would
cost gigabytes; and the peak resident set size of a separate Python process fitting both.
"""

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from numpy.testing import assert_allclose

import simplexens
from simplexens.backends.swag import SWAGMoments

SHAPES = {"w": (50, 20), "b": (20,)}  # float32
P = 1020
ROW_BYTES = P * 4  # one deviation
HUGE = 10**6  # all K rows of SHAPES would take 4 GB

pytestmark = pytest.mark.usefixtures("global_rng_untouched")


def _snapshots(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        {name: torch.randn(shape, generator=g) for name, shape in SHAPES.items()} for _ in range(n)
    ]


def _collected(snapshots, max_rank):
    moments = SWAGMoments(max_rank=max_rank)
    for snapshot in snapshots:
        moments.collect(snapshot)
    return moments


def _allocated_bytes(moments):
    """Bytes of the storage behind the deviations (a view of the buffer before it wraps)."""
    return sum(d.untyped_storage().nbytes() for d in moments.deviations.values())


# --------------------------------------------------------------------------- held in memory


def test_huge_max_rank_allocates_rows_as_collected():
    """Capacity between n and 2n rows for K = 10**6: the storage is that, not K rows."""
    moments = SWAGMoments(max_rank=HUGE)
    for n, snapshot in enumerate(_snapshots(9), start=1):
        moments.collect(snapshot)
        assert moments.n_deviations == n
        assert n <= moments.capacity <= 2 * n
        assert _allocated_bytes(moments) == moments.capacity * ROW_BYTES


def test_expected_collections_caps_the_capacity():
    moments = SWAGMoments(max_rank=HUGE, expected_collections=5)
    for snapshot in _snapshots(5):
        moments.collect(snapshot)
    assert moments.capacity == 5  # doubling alone would have reached 8
    assert _allocated_bytes(moments) == 5 * ROW_BYTES
    moments.collect(_snapshots(1, seed=1)[0])  # one more than announced: still taken
    assert moments.n_deviations == 6
    assert 6 <= moments.capacity <= 12


# --------------------------------------------------------------------------- pickles


def test_pickle_size_does_not_depend_on_max_rank():
    snapshots = _snapshots(3)
    huge, small = _collected(snapshots, HUGE), _collected(snapshots, 20)
    assert abs(len(pickle.dumps(huge)) - len(pickle.dumps(small))) < 1024
    huge_state, small_state = pickle.dumps(huge.state_dict()), pickle.dumps(small.state_dict())
    assert abs(len(huge_state) - len(small_state)) < 1024
    # The numbers held: three deviations, and the mean and second moment in float64.
    held = 3 * ROW_BYTES + 2 * P * 8
    assert held < len(pickle.dumps(huge)) < held + 4096


@pytest.mark.parametrize("max_rank", [HUGE, 4])
def test_pickle_grows_by_the_bytes_of_each_deviation_held(max_rank):
    """size(n) - size(1) is (K_eff(n) - 1) deviations' bytes; constant once the buffer wraps."""
    moments = SWAGMoments(max_rank=max_rank)
    sizes, held = [], []
    for snapshot in _snapshots(10):
        moments.collect(snapshot)
        sizes.append(len(pickle.dumps(moments)))
        held.append(sum(d.numel() * d.element_size() for d in moments.deviations.values()))
    growth = [size - sizes[0] for size in sizes]
    expected = [bytes_ - held[0] for bytes_ in held]
    assert expected[-1] == (min(10, max_rank) - 1) * ROW_BYTES
    assert_allclose(growth, expected, rtol=0, atol=16)  # pickled small ints vary in width


# --------------------------------------------------------------------------- end to end

_FIT_TWICE = """
import json, pickle, resource, sys

sys.path[:0] = [sys.argv[1], sys.argv[2]]
import numpy as np
from sklearn.datasets import load_digits

from nets import MLP
from simplexens import SWAGClassifier

X, y = load_digits(return_X_y=True)
X, y = (X[:300] / 16).astype(np.float32), y[:300]


def fit(max_rank):
    params = dict(
        swa_start=1, max_epochs=3, n_predict_samples=3, collect_every=None, random_state=0
    )
    return SWAGClassifier(MLP, max_rank=max_rank, **params).fit(X, y)


def peak_kib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


small = fit(20)
peak_small = peak_kib()
huge = fit(int(sys.argv[3]))
peak_huge = peak_kib()
print(json.dumps(dict(
    peak_small=peak_small,
    peak_huge=peak_huge,
    pickle_small=len(pickle.dumps(small)),
    pickle_huge=len(pickle.dumps(huge)),
    n_collected=[m.n_collected for m in (*small.swag_moments_, *huge.swag_moments_)],
    same_proba=bool(np.array_equal(small.predict_proba(X), huge.predict_proba(X))),
)))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB on Linux")
def test_fitting_with_a_huge_max_rank_costs_no_memory():
    """SWAGClassifier(max_rank=10**6) peaks within 5 MB of max_rank=20, pickles within 10 KB.

    In a fresh process, so that nothing of this one counts. All K rows of the MLP's 1210
    parameters would be 4.8 GB.
    """
    package_root = str(Path(simplexens.__file__).resolve().parents[1])
    tests_dir = str(Path(__file__).resolve().parent)
    result = subprocess.run(
        [sys.executable, "-c", _FIT_TWICE, package_root, tests_dir, str(HUGE)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["n_collected"] == [2, 2]  # epochs 2 and 3 of 3, swa_start=1
    assert measured["same_proba"]  # K >= 2 deviations collected: max_rank changes nothing
    assert measured["peak_huge"] - measured["peak_small"] < 5 * 1024
    assert abs(measured["pickle_huge"] - measured["pickle_small"]) < 10 * 1024
