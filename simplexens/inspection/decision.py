"""Decision regions of an ensemble and of its members on 2-D inputs: functional diversity.

Members that agree on the training data can still draw different boundaries away from it;
the ensemble's regions are those of the Bayesian model average.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.utils import Bunch
from sklearn.utils.validation import check_is_fitted

from .._params import Integer, Real
from ._plot import _class_colormap, _figure_and_axes_grid, _matplotlib

__all__ = ["DecisionRegionsDisplay", "decision_regions"]

#: Members shown when the caller does not choose.
DEFAULT_SHOWN = 6


def _check_ensemble(estimator, caller: str) -> None:
    if not hasattr(estimator, "predict_member_proba"):
        raise TypeError(
            f"{caller} needs an ensemble with predict_member_proba (a simplexens estimator); "
            f"got {type(estimator).__name__}."
        )
    check_is_fitted(estimator)


def _check_2d(X) -> np.ndarray:
    """``X`` as a finite float array of shape (n_samples, 2)."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != 2 or X.shape[0] == 0:
        raise ValueError(
            f"decision regions are drawn for 2-D inputs: X must have shape (n_samples, 2) "
            f"with n_samples >= 1, got shape {X.shape}."
        )
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinite values.")
    return X


def _check_members(members, n_members: int) -> np.ndarray:
    """The member indices to show: given ones checked, or up to 6 evenly spaced."""
    if members is None:
        shown = min(n_members, DEFAULT_SHOWN)
        return np.unique(np.linspace(0, n_members - 1, shown).round().astype(np.intp))
    members = np.asarray(members)
    if members.ndim != 1 or not all(
        isinstance(m, numbers.Integral) and not isinstance(m, bool | np.bool_)
        for m in members.tolist()
    ):
        raise ValueError(f"members must be a 1-D sequence of integers, got {members!r}.")
    bad = members[(members < 0) | (members >= n_members)]
    if len(bad):
        raise ValueError(
            f"members {bad.tolist()} are out of range: the estimator has {n_members} members "
            f"(indices 0 to {n_members - 1})."
        )
    if len(np.unique(members)) != len(members):
        raise ValueError(f"members must be unique, got {members.tolist()}.")
    return members.astype(np.intp)


def _grid(X: np.ndarray, grid_resolution: int, eps: float):
    """A ``grid_resolution`` square grid over X's bounding box widened by ``eps``."""
    low, high = X.min(axis=0) - eps, X.max(axis=0) + eps
    return np.meshgrid(
        np.linspace(low[0], high[0], grid_resolution),
        np.linspace(low[1], high[1], grid_resolution),
    )


def decision_regions(estimator, X, *, grid_resolution=100, eps=0.5, members=None):
    """The ensemble's and some members' predicted classes on a grid around 2-D data.

    One call to ``estimator.predict_member_proba`` on the grid points gives every member's
    probabilities; a member's label is its most probable class, the ensemble's is the most
    probable class of the members' mean probability (what ``estimator.predict`` returns).

    Parameters
    ----------
    estimator : fitted simplexens classifier
        An ensemble with ``predict_member_proba``, ``classes_`` and ``n_members_``, fitted on
        2 features.
    X : array-like of shape (n_samples, 2)
        Data whose bounding box the grid covers.
    grid_resolution : int, default=100
        Grid points along each axis, at least 2.
    eps : float, default=0.5
        Margin added around X's bounding box on each side, at least 0.
    members : array-like of int, default=None
        Indices of the members to show (into ``range(estimator.n_members_)``, unique);
        None shows up to 6, evenly spaced. May be empty.

    Returns
    -------
    Bunch
        xx0, xx1 : ndarray of shape (grid_resolution, grid_resolution)
            Grid coordinates, as ``np.meshgrid`` returns them.
        ensemble : ndarray of shape (grid_resolution, grid_resolution)
            The ensemble's predicted label at each grid point.
        member_labels : ndarray of shape (n_members_shown, grid_resolution, grid_resolution)
            Each shown member's predicted label.
        members : ndarray of shape (n_members_shown,)
            Indices of the shown members.
        n_members : int
            Members of the ensemble, all of which its labels average.
        classes : ndarray of shape (n_classes,)
            ``estimator.classes_``.

    Raises
    ------
    TypeError
        If ``estimator`` has no ``predict_member_proba``.
    sklearn.exceptions.NotFittedError
        If it is not fitted.
    ValueError
        If X is not of shape (n_samples, 2) or not finite, ``grid_resolution < 2``,
        ``eps < 0`` or ``members`` are not valid indices.

    See Also
    --------
    DecisionRegionsDisplay : Draws these arrays.
    """
    _check_ensemble(estimator, "decision_regions")
    X = _check_2d(X)
    Integer(2).check("grid_resolution", grid_resolution)
    Real(0).check("eps", eps)
    members = _check_members(members, estimator.n_members_)
    xx0, xx1 = _grid(X, grid_resolution, eps)
    proba = estimator.predict_member_proba(np.c_[xx0.ravel(), xx1.ravel()])
    classes = estimator.classes_
    shape = xx0.shape
    return Bunch(
        xx0=xx0,
        xx1=xx1,
        ensemble=classes[proba.mean(axis=0).argmax(axis=-1)].reshape(shape),
        member_labels=classes[proba[members].argmax(axis=-1)].reshape(len(members), *shape),
        members=members,
        n_members=int(proba.shape[0]),
        classes=classes,
    )


def _label_codes(labels, classes, name: str) -> np.ndarray:
    """Index of each label in ``classes`` (same shape as ``labels``)."""
    labels, classes = np.asarray(labels), np.asarray(classes)
    order = np.argsort(classes, kind="stable")
    ordered = classes[order]
    position = np.searchsorted(ordered, labels).clip(max=len(classes) - 1)
    found = ordered[position] == labels
    if not np.all(found):
        unknown = np.unique(labels[~found])[:5].tolist()
        raise ValueError(f"{name} has labels {unknown} that are not among {classes.tolist()}.")
    return order[position]


class DecisionRegionsDisplay:
    """Decision regions of ensemble members and of the ensemble, side by side.

    Small multiples over one grid: a panel per shown member, then one for the ensemble, with
    the data drawn on top (coloured by class when labels are given). On data such as two
    spirals this shows functional diversity: members that fit the data alike yet draw
    different boundaries away from it. Create it with :meth:`from_estimator`.

    Parameters
    ----------
    xx0, xx1 : ndarray of shape (grid_resolution, grid_resolution)
        Grid coordinates.
    ensemble : ndarray of shape (grid_resolution, grid_resolution)
        The ensemble's predicted labels.
    member_labels : ndarray of shape (n_members_shown, grid_resolution, grid_resolution)
        The shown members' predicted labels.
    members : ndarray of shape (n_members_shown,)
        Indices of the shown members, for the panel titles.
    classes : ndarray of shape (n_classes,)
        All class labels, which fix the colours.
    X : ndarray of shape (n_samples, 2), default=None
        Data drawn on every panel; None draws none.
    y : ndarray of shape (n_samples,), default=None
        Labels of ``X``, colouring its points; None draws them black.
    n_members : int, default=None
        Size of the ensemble, for the ensemble panel's title.
    estimator_name : str, default=None
        Name in the figure title.

    Attributes
    ----------
    axes_ : ndarray of shape (n_members_shown + 1,), dtype object
        The panels: members in the order of ``members``, then the ensemble.
    ax_ : matplotlib Axes
        The ensemble's panel, ``axes_[-1]``.
    surfaces_ : list of matplotlib QuadContourSet
        The filled regions, one per panel.
    figure_ : matplotlib Figure

    See Also
    --------
    decision_regions : Computes the arrays.
    sklearn.inspection.DecisionBoundaryDisplay : One estimator's regions.

    References
    ----------
    .. [1] S. Fort, H. Hu, B. Lakshminarayanan. "Deep Ensembles: A Loss Landscape
       Perspective." arXiv:1912.02757, 2019.
    .. [2] G. W. Benton, W. J. Maddox, S. Lotfi, A. G. Wilson. "Loss Surface Simplexes for
       Mode Connecting Volumes and Fast Ensembling." ICML 2021.

    Examples
    --------
    >>> from torch import nn
    >>> from sklearn.datasets import make_moons
    >>> from simplexens import DeepEnsembleClassifier
    >>> from simplexens.inspection import DecisionRegionsDisplay
    >>> def MLP(n_features_in, n_classes):
    ...     return nn.Sequential(nn.Linear(n_features_in, 32), nn.ReLU(),
    ...                          nn.Linear(32, n_classes))
    >>> X, y = make_moons(200, noise=0.1, random_state=0)
    >>> clf = DeepEnsembleClassifier(MLP, n_estimators=3, max_epochs=10, lr=0.1,
    ...                              random_state=0).fit(X, y)
    >>> disp = DecisionRegionsDisplay.from_estimator(clf, X, y, grid_resolution=50)
    >>> len(disp.axes_), disp.member_labels.shape
    (4, (3, 50, 50))
    """

    def __init__(
        self,
        xx0,
        xx1,
        ensemble,
        member_labels,
        members,
        classes,
        *,
        X=None,
        y=None,
        n_members=None,
        estimator_name=None,
    ):
        self.xx0 = xx0
        self.xx1 = xx1
        self.ensemble = ensemble
        self.member_labels = member_labels
        self.members = members
        self.classes = classes
        self.X = X
        self.y = y
        self.n_members = n_members
        self.estimator_name = estimator_name

    def plot(self, ax=None, *, name=None, cmap=None, alpha=0.5):
        """Draw the panels.

        Parameters
        ----------
        ax : array-like of matplotlib Axes, default=None
            Exactly ``n_members_shown + 1`` axes (a single Axes when no member is shown);
            None creates a grid of panels with shared axes.
        name : str, default=None
            Figure title (only on a new figure); ``estimator_name`` if None.
        cmap : str or matplotlib Colormap, default=None
            Colours of the classes; None takes one ``tab10`` colour per class.
        alpha : float, default=0.5
            Opacity of the regions.

        Returns
        -------
        display : DecisionRegionsDisplay
            This display, with ``axes_``, ``ax_``, ``figure_`` and ``surfaces_`` set.
        """
        caller = f"{type(self).__name__}.plot"
        _matplotlib(caller)
        panels = [*self.member_labels, self.ensemble]
        titles = [f"member {int(i)}" for i in self.members]
        titles.append("ensemble" if self.n_members is None else f"ensemble of {self.n_members}")
        created = ax is None
        self.figure_, self.axes_ = _figure_and_axes_grid(ax, len(panels), caller)
        self.ax_ = self.axes_[-1]
        cmap, (vmin, vmax) = _class_colormap(len(self.classes), cmap, caller)
        levels = np.arange(len(self.classes) + 1) - 0.5
        self.surfaces_ = []
        for panel, labels, title in zip(self.axes_, panels, titles, strict=True):
            codes = _label_codes(labels, self.classes, "the grid labels")
            self.surfaces_.append(
                panel.contourf(
                    self.xx0,
                    self.xx1,
                    codes,
                    levels=levels,
                    cmap=cmap,
                    vmin=vmin,
                    vmax=vmax,
                    alpha=alpha,
                )
            )
            self._scatter(panel, cmap, vmin, vmax)
            panel.set_title(title)
        name = self.estimator_name if name is None else name
        if created and name is not None:
            self.figure_.suptitle(name)
        return self

    def _scatter(self, panel, cmap, vmin, vmax):
        """The data on top of a panel, coloured by class when ``y`` is known."""
        if self.X is None:
            return
        X = np.asarray(self.X)
        if self.y is None:
            panel.scatter(X[:, 0], X[:, 1], c="k", s=8)
            return
        codes = _label_codes(self.y, self.classes, "y")
        panel.scatter(
            X[:, 0],
            X[:, 1],
            c=codes,
            cmap=cmap,
            vmin=vmin,
            vmax=vmax,
            s=12,
            edgecolors="k",
            linewidths=0.5,
        )

    @classmethod
    def from_estimator(
        cls,
        estimator,
        X,
        y=None,
        *,
        members=None,
        grid_resolution=100,
        eps=0.5,
        name=None,
        ax=None,
    ):
        """Decision regions of a fitted ensemble and of some of its members, around ``X``.

        Parameters
        ----------
        estimator : fitted simplexens classifier
            An ensemble fitted on 2 features.
        X : array-like of shape (n_samples, 2)
            Data: the grid covers it and it is drawn on every panel.
        y : array-like of shape (n_samples,), default=None
            Labels colouring the points; None draws them black.
        members : array-like of int, default=None
            Members to show; None shows up to 6, evenly spaced.
        grid_resolution : int, default=100
            Grid points along each axis.
        eps : float, default=0.5
            Margin around X's bounding box.
        name : str, default=None
            Figure title; the estimator's class name if None.
        ax : array-like of matplotlib Axes, default=None
            One axes per panel (members, then the ensemble); None creates a figure.

        Returns
        -------
        display : DecisionRegionsDisplay

        Raises
        ------
        TypeError
            If ``estimator`` has no ``predict_member_proba``.
        sklearn.exceptions.NotFittedError
            If it is not fitted.
        ValueError
            On X of the wrong shape, ``y`` of another length or with unknown labels, and
            the arguments :func:`decision_regions` refuses.
        """
        arrays = decision_regions(
            estimator, X, grid_resolution=grid_resolution, eps=eps, members=members
        )
        X = _check_2d(X)
        if y is not None:
            y = np.asarray(y)
            if y.shape != (len(X),):
                raise ValueError(f"y must have shape ({len(X)},) like X's rows, got {y.shape}.")
            _label_codes(y, arrays.classes, "y")
        display = cls(
            arrays.xx0,
            arrays.xx1,
            arrays.ensemble,
            arrays.member_labels,
            arrays.members,
            arrays.classes,
            X=X,
            y=y,
            n_members=arrays.n_members,
            estimator_name=type(estimator).__name__ if name is None else name,
        )
        return display.plot(ax=ax)
