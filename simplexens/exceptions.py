"""Errors and warnings of simplexens."""

from __future__ import annotations


class DivergenceError(RuntimeError):
    """Training diverged: a non-finite loss, weights or probabilities.

    The message names the estimator, the member and the phase (mode, vertex, cycle, SWA),
    the epoch when known, and the learning rate to lower. The estimator is left unfitted.
    """
