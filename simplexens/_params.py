"""Declared parameter constraints, checked once at the start of ``fit``.

Each estimator lists its parameters in a ``_constraints`` table (name -> constraint), as
scikit-learn's estimators do with their private ``_parameter_constraints``. One checker reads
the table, so that every estimator rejects the same mistakes with the same messages: NaN and
infinities where a real number is expected, ``True``/``False`` where an integer is expected,
values out of range, unknown options.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Real:
    """A finite real number (not a bool) in a range.

    Parameters
    ----------
    low, high : float or None
        Bounds; None leaves that side open.
    closed : {"both", "left", "right", "neither"}, default="both"
        Which bounds the value may equal.
    none : bool, default=False
        Whether None is accepted.
    """

    low: float | None = None
    high: float | None = None
    closed: str = "both"
    none: bool = False

    def check(self, name: str, value) -> None:
        if value is None and self.none:
            return
        if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be {self._describe()}, got {value!r}.")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}.")
        _check_range(name, value, self.low, self.high, self.closed, self._describe())

    def _describe(self) -> str:
        text = "a real number" + _range_text(self.low, self.high, self.closed)
        return text + (" or None" if self.none else "")


@dataclass(frozen=True)
class Integer:
    """An integer (not a bool) in a range, possibly with special values.

    Parameters
    ----------
    low, high : int or None
        Inclusive bounds; None leaves that side open.
    none : bool, default=False
        Whether None is accepted.
    also : tuple of int, default=()
        Values accepted outside the range (``-1`` for "all rows").
    exclude : tuple of int, default=()
        Values refused inside the range (``n_jobs=0``).
    """

    low: int | None = None
    high: int | None = None
    none: bool = False
    also: tuple = ()
    exclude: tuple = ()

    def check(self, name: str, value) -> None:
        if value is None and self.none:
            return
        if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be {self._describe()}, got {value!r}.")
        if value in self.also:
            return
        if value in self.exclude:
            raise ValueError(f"{name} must be {self._describe()}, got {value!r}.")
        _check_range(name, value, self.low, self.high, "both", self._describe())

    def _describe(self) -> str:
        text = "an integer" + _range_text(self.low, self.high, "both")
        text += "".join(f" or {v}" for v in self.also)
        text += "".join(f" other than {v}" for v in self.exclude)
        return text + (" or None" if self.none else "")


@dataclass(frozen=True)
class Boolean:
    """``True`` or ``False`` (numpy booleans included)."""

    def check(self, name: str, value) -> None:
        if not isinstance(value, bool | np.bool_):
            raise TypeError(f"{name} must be True or False, got {value!r}.")


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values."""

    values: tuple

    def check(self, name: str, value) -> None:
        if not isinstance(value, str | None) or value not in self.values:
            allowed = ", ".join(map(repr, self.values))
            raise ValueError(f"{name} must be one of {allowed}; got {value!r}.")


def check_parameters(estimator, constraints: Mapping) -> None:
    """Check the estimator's parameters against ``constraints`` (name -> constraint)."""
    for name, constraint in constraints.items():
        constraint.check(name, getattr(estimator, name))


def check_routed_scalars(routed: Mapping) -> None:
    """Reject NaN and infinities among routed numeric values (``optimizer__lr=nan``).

    Numbers inside tuples and lists (``optimizer__betas=(0.9, nan)``) are checked too.
    """
    for name, value in routed.items():
        values = value if isinstance(value, tuple | list) else (value,)
        for item in values:
            number = isinstance(item, numbers.Real) and not isinstance(item, bool | np.bool_)
            if number and not math.isfinite(item):
                raise ValueError(f"{name} must be finite, got {value!r}.")


def check_routed_names(routed: Mapping, prefixes: tuple, named: list, exact: tuple = ()) -> None:
    """Reject keywords that are neither parameters nor routed (nor one of the ``exact``
    names), suggesting the closest name."""
    unknown = [k for k in routed if not k.startswith(prefixes) and k not in exact]
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, [*named, *exact], n=1)
        hints.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    allowed = f"be one of {', '.join(exact)} or " if exact else ""
    raise TypeError(
        f"unexpected parameter(s) {', '.join(hints)}; extra parameters must {allowed}start "
        f"with one of {', '.join(prefixes)}."
    )


def _check_range(name, value, low, high, closed, described) -> None:
    low_ok = low is None or value > low or (value == low and closed in ("both", "left"))
    high_ok = high is None or value < high or (value == high and closed in ("both", "right"))
    if not (low_ok and high_ok):
        raise ValueError(f"{name} must be {described}, got {value!r}.")


def _range_text(low, high, closed) -> str:
    if low is None and high is None:
        return ""
    left = ">=" if closed in ("both", "left") else ">"
    right = "<=" if closed in ("both", "right") else "<"
    if high is None:
        return f" {left} {low}"
    if low is None:
        return f" {right} {high}"
    return f" in {'[' if left == '>=' else '('}{low}, {high}{']' if right == '<=' else ')'}"
