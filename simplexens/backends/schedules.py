"""The cyclical learning-rate schedule of Fast Geometric Ensembling, in closed form.

Garipov et al. (2018) move the learning rate linearly from α1 down to α2 over the first half of
each cycle of c epochs and back up over the second half, and collect the weights when it
reaches α2. Here a cycle has ``C = round(c * n_batches)`` iterations (so c may be any positive
length, fractional or odd); the rate falls over iterations ``0 ... j*`` with
``j* = floor(C / 2)``, is exactly α2 at ``j*``, and rises back to α1 at the start of the next
cycle. The snapshot of cycle ``s`` is taken right after the update of iteration
``s * C + j*``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CyclicSchedule:
    """A triangular schedule α1 → α2 → α1 over cycles of ``cycle_iterations`` steps.

    Parameters
    ----------
    alpha1 : float
        α1, the rate at the start (and end) of each cycle.
    alpha2 : float
        α2, the rate at the middle of each cycle, where snapshots are taken.
    cycle_iterations : int
        C >= 2, iterations per cycle.
    n_snapshots : int
        Number of cycles, one snapshot each.

    References
    ----------
    .. [1] T. Garipov, P. Izmailov, D. Podoprikhin, D. Vetrov, A. G. Wilson. "Loss Surfaces,
       Mode Connectivity, and Fast Ensembling of DNNs." NeurIPS 2018, Section 4.
    """

    alpha1: float
    alpha2: float
    cycle_iterations: int
    n_snapshots: int

    @property
    def middle(self) -> int:
        """j*, the iteration of a cycle at which the rate is α2."""
        return self.cycle_iterations // 2

    @property
    def total_iterations(self) -> int:
        """Iterations up to and including the last snapshot's."""
        return (self.n_snapshots - 1) * self.cycle_iterations + self.middle + 1

    def rate(self, iteration: int) -> float:
        """The learning rate of (0-based) ``iteration``."""
        j = iteration % self.cycle_iterations
        middle, length = self.middle, self.cycle_iterations
        if j <= middle:
            return self.alpha1 + (self.alpha2 - self.alpha1) * j / middle
        return self.alpha2 + (self.alpha1 - self.alpha2) * (j - middle) / (length - middle)

    def is_snapshot(self, iteration: int) -> bool:
        """Whether the weights after ``iteration``'s update are a snapshot."""
        return (
            iteration % self.cycle_iterations == self.middle and iteration < self.total_iterations
        )
