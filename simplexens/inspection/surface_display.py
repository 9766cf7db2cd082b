"""Displays of the loss along a path and on a plane of parameter space (the papers' figures).

The arrays come from :mod:`simplexens.inspection.surface`; matplotlib is imported only when
``plot`` runs.
"""

from __future__ import annotations

import numpy as np

from ._plot import _figure_and_axes, _matplotlib
from .surface import loss_along_curve, loss_along_path, loss_on_plane

RESPONSES = ("nll", "accuracy", "error")


class PathDisplay:
    """NLL and accuracy along a path in parameter space (Garipov et al. 2018, Figure 2).

    Parameters
    ----------
    t : ndarray of shape (n_points,)
        Positions along the path, in [0, 1].
    nll, accuracy : ndarray of shape (n_points,)
        At every position.
    name : str, optional
        Legend label.

    Attributes
    ----------
    ax_ : matplotlib Axes
        The NLL axes.
    accuracy_ax_ : matplotlib Axes
        The twin axes of the accuracy.
    figure_ : matplotlib Figure

    Examples
    --------
    >>> from simplexens.inspection import PathDisplay
    >>> display = PathDisplay.from_estimator(ensemble, X, y, start=0, end=1)  # doctest: +SKIP
    >>> display = PathDisplay.from_curve(curve, X, y)  # doctest: +SKIP
    """

    def __init__(self, *, t, nll, accuracy, name=None):
        self.t = np.asarray(t)
        self.nll = np.asarray(nll)
        self.accuracy = np.asarray(accuracy)
        self.name = name

    @classmethod
    def from_estimator(
        cls, estimator, X, y, *, start=0, end=1, n_points=25, recalibrate_bn=None, name=None,
        ax=None,
    ):  # fmt: skip
        """The straight segment between two parameter sets of a fitted estimator.

        Parameters as :func:`~simplexens.inspection.loss_along_path`; ``ax`` and ``name`` as
        :meth:`plot`.

        Returns
        -------
        PathDisplay
        """
        path = loss_along_path(
            estimator, X, y, start=start, end=end, n_points=n_points,
            recalibrate_bn=recalibrate_bn,
        )  # fmt: skip
        return cls(t=path.t, nll=path.nll, accuracy=path.accuracy, name=name).plot(ax=ax)

    @classmethod
    def from_curve(cls, estimator, X, y, *, n_points=25, recalibrate_bn=None, name=None, ax=None):
        """Along a fitted :class:`~simplexens.CurveClassifier`'s curve.

        Parameters as :func:`~simplexens.inspection.loss_along_curve`.

        Returns
        -------
        PathDisplay
        """
        path = loss_along_curve(estimator, X, y, n_points=n_points, recalibrate_bn=recalibrate_bn)
        name = name or f"{estimator.curve} curve"
        return cls(t=path.t, nll=path.nll, accuracy=path.accuracy, name=name).plot(ax=ax)

    def plot(self, ax=None, *, name=None):
        """Draw NLL (left axis) and accuracy (right axis) against ``t``.

        Parameters
        ----------
        ax : matplotlib Axes, optional
            Axes to draw on; a new figure otherwise.
        name : str, optional
            Legend label (default: the display's ``name``).

        Returns
        -------
        self
        """
        self.figure_, self.ax_ = _figure_and_axes(ax, "PathDisplay.plot")
        label = name or self.name
        (line,) = self.ax_.plot(self.t, self.nll, marker="o", markersize=3, label=label)
        self.ax_.set_xlabel("t (position along the path)")
        self.ax_.set_ylabel("NLL (lower is better)")
        self.accuracy_ax_ = _twin(self.ax_)
        self.accuracy_ax_.plot(self.t, self.accuracy, linestyle="--", color=line.get_color())
        self.accuracy_ax_.set_ylabel("accuracy (dashed; higher is better)")
        if label:
            self.ax_.legend(loc="upper center")
        return self


def _twin(ax):
    """The accuracy axes twinned with ``ax``: made once, reused when paths share ``ax``."""
    for other in ax.figure.axes:
        if other.get_label() == "path accuracy" and other.get_shared_x_axes().joined(ax, other):
            return other
    twin = ax.twinx()
    twin.set_label("path accuracy")
    return twin


class PlaneDisplay:
    """A loss surface on the plane through three parameter sets (Benton et al. 2021,
    Figures 3 and 6), with the anchors and the estimator's members drawn on top.

    Parameters
    ----------
    xx0, xx1 : ndarray of shape (grid, grid)
        Plane coordinates of the grid.
    response : ndarray of shape (grid, grid)
        The values drawn (NLL, accuracy or error).
    response_name : {"nll", "accuracy", "error"}
        What ``response`` is.
    anchor_coords : ndarray of shape (3, 2)
        The three anchors' coordinates.
    member_coords : ndarray of shape (n_members, 2), optional
        The estimator's members projected on the plane.
    anchor_labels : sequence of 3 str, optional

    Attributes
    ----------
    ax_ : matplotlib Axes
    figure_ : matplotlib Figure
    surface_ : matplotlib QuadContourSet
    colorbar_ : matplotlib Colorbar

    Examples
    --------
    >>> from simplexens.inspection import PlaneDisplay
    >>> PlaneDisplay.from_simplex_face(espro, X, y, mode=0)  # doctest: +SKIP
    >>> PlaneDisplay.from_complex(spro, X, y)  # doctest: +SKIP
    """

    def __init__(
        self, *, xx0, xx1, response, response_name="nll", anchor_coords, member_coords=None,
        anchor_labels=None,
    ):  # fmt: skip
        self.xx0, self.xx1, self.response = xx0, xx1, np.asarray(response)
        self.response_name = response_name
        self.anchor_coords = np.asarray(anchor_coords)
        self.member_coords = None if member_coords is None else np.asarray(member_coords)
        self.anchor_labels = anchor_labels or ("anchor 0", "anchor 1", "anchor 2")

    @classmethod
    def from_estimator(
        cls, estimator, X, y, *, anchors=(0, 1, 2), response="nll", grid_resolution=21,
        margin=0.2, recalibrate_bn=None, anchor_labels=None, ax=None,
    ):  # fmt: skip
        """The plane through three parameter sets of a fitted estimator.

        Parameters as :func:`~simplexens.inspection.loss_on_plane`; ``response`` is one of
        ``"nll"``, ``"accuracy"``, ``"error"`` (1 - accuracy).

        Returns
        -------
        PlaneDisplay
        """
        if response not in RESPONSES:
            raise ValueError(f"response must be one of {RESPONSES}; got {response!r}.")
        plane = loss_on_plane(
            estimator, X, y, anchors=anchors, grid_resolution=grid_resolution, margin=margin,
            recalibrate_bn=recalibrate_bn,
        )  # fmt: skip
        values = {"nll": plane.nll, "accuracy": plane.accuracy, "error": 1 - plane.accuracy}
        labels = anchor_labels or tuple(_label(spec) for spec in anchors)
        return cls(
            xx0=plane.xx0, xx1=plane.xx1, response=values[response], response_name=response,
            anchor_coords=plane.anchor_coords, member_coords=plane.member_coords,
            anchor_labels=labels,
        ).plot(ax=ax)  # fmt: skip

    @classmethod
    def from_simplex_face(cls, estimator, X, y, *, mode=0, face=(0, 1, 2), **kwargs):
        """A face of one of a fitted ESPRO's simplexes (the paper's Figure 6).

        Parameters
        ----------
        estimator : fitted ESPROClassifier
        mode : int, default=0
            Which simplex.
        face : 3 ints, default=(0, 1, 2)
            Which of its vertices (0 is the mode).
        **kwargs
            As :meth:`from_estimator`.

        Returns
        -------
        PlaneDisplay
        """
        if not hasattr(estimator, "simplex_vertices_"):
            raise TypeError(
                f"{type(estimator).__name__} has no simplexes; fit an ESPROClassifier."
            )
        n_vertices = next(iter(estimator.simplex_vertices_.values())).shape[1]
        anchors = [("vertices", mode * n_vertices + j) for j in face]
        labels = kwargs.pop("anchor_labels", None) or tuple(f"vertex {j}" for j in face)
        return cls.from_estimator(estimator, X, y, anchors=anchors, anchor_labels=labels, **kwargs)

    @classmethod
    def from_complex(cls, estimator, X, y, *, anchors=None, **kwargs):
        """A plane through a fitted SPRO complex (the paper's Figure 3): by default through
        the first two modes and the first connector.

        Parameters
        ----------
        estimator : fitted SPROClassifier
        anchors : 3 ints, optional
            Indices into ``complex_vertices_`` (modes first, then connectors).
        **kwargs
            As :meth:`from_estimator`.

        Returns
        -------
        PlaneDisplay
        """
        if not hasattr(estimator, "complex_vertices_"):
            raise TypeError(f"{type(estimator).__name__} has no complex; fit an SPROClassifier.")
        n_modes = estimator.n_modes
        anchors = anchors or (0, 1, n_modes)
        names = [f"mode {i}" if i < n_modes else f"connector {i - n_modes}" for i in anchors]
        labels = kwargs.pop("anchor_labels", None) or tuple(names)
        specs = [("anchors", i) for i in anchors]
        return cls.from_estimator(estimator, X, y, anchors=specs, anchor_labels=labels, **kwargs)

    def plot(self, ax=None, *, levels=15, cmap="viridis"):
        """Draw the surface (log-scaled colours for NLL and error, as in the papers), the
        anchors and the members.

        Parameters
        ----------
        ax : matplotlib Axes, optional
        levels : int, default=15
            Number of contour levels.
        cmap : str, default="viridis"

        Returns
        -------
        self
        """
        self.figure_, self.ax_ = _figure_and_axes(ax, "PlaneDisplay.plot")
        plt = _matplotlib("PlaneDisplay.plot")
        values = self.response
        if self.response_name == "accuracy":
            bounds, norm = np.linspace(values.min(), values.max() + 1e-12, levels), None
        else:
            from matplotlib.colors import LogNorm

            low = max(values.min(), 1e-6)
            bounds = np.geomspace(low, max(values.max(), low * 1.0001), levels)
            norm = LogNorm(bounds[0], bounds[-1])
            values = np.clip(values, bounds[0], bounds[-1])
        self.surface_ = self.ax_.contourf(self.xx0, self.xx1, values, bounds, cmap=cmap, norm=norm)
        self.colorbar_ = plt.colorbar(
            self.surface_, ax=self.ax_, label=self.response_name, ticks=bounds[::2], format="%.3g"
        )
        if self.member_coords is not None and len(self.member_coords):
            x, y = self.member_coords.T
            self.ax_.scatter(
                x, y, s=8, c="white", edgecolors="black", linewidths=0.3, label="members"
            )
        for (x, y), label in zip(self.anchor_coords, self.anchor_labels, strict=True):
            self.ax_.scatter([x], [y], marker="*", s=120, c="red", edgecolors="black")
            self.ax_.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5))
        self.ax_.set_xlabel("u")
        self.ax_.set_ylabel("v")
        self.ax_.set_aspect("equal")
        return self


def _label(spec) -> str:
    if isinstance(spec, tuple):
        return f"{spec[0][:-1]} {spec[1]}"
    return f"member {spec}" if not isinstance(spec, dict) else "point"
