"""Shared data for the tests: scikit-learn's embedded digits, split once."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


@pytest.fixture(scope="session")
def digits():
    """Digits scaled to [0, 1], split 75/25 (random_state 0): X_train, X_test, y_train, y_test."""
    X, y = load_digits(return_X_y=True)
    return train_test_split((X / 16).astype(np.float32), y, test_size=0.25, random_state=0)


@pytest.fixture(scope="session")
def small_digits(digits):
    """The first 300 training rows of digits, for quick fits."""
    X_train, _, y_train, _ = digits
    return X_train[:300], y_train[:300]


@pytest.fixture
def global_rng_untouched():
    """Fails the test if it changed torch's global random state (library code must not)."""
    before = torch.get_rng_state()
    yield
    torch.testing.assert_close(torch.get_rng_state(), before, rtol=0, atol=0)
