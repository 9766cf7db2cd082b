"""The one door to matplotlib: every import of it in simplexens goes through this module.

matplotlib is an optional dependency (the ``plot`` extra). Nothing here imports it at module
level, so ``import simplexens.inspection`` stays free of it; each helper imports it when a
Display's ``plot`` runs.
"""

from __future__ import annotations

import numpy as np

#: How to get matplotlib, named in the error raised when it is missing.
INSTALL_HINT = "pip install 'simplexens[plot]'"


def _matplotlib(caller: str = "plotting"):
    """Import and return ``matplotlib.pyplot``.

    Parameters
    ----------
    caller : str, default="plotting"
        What needs matplotlib (e.g. ``"ReliabilityDisplay.plot"``), for the error message.

    Returns
    -------
    module
        ``matplotlib.pyplot``.

    Raises
    ------
    ImportError
        If matplotlib is not installed, naming the ``plot`` extra that installs it.
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(f"{caller} requires matplotlib: {INSTALL_HINT}") from exc
    return plt


def _figure_and_axes(ax=None, caller: str = "plotting", **subplots_kwargs):
    """The figure and axes to draw on: ``ax`` and its figure, or a new figure with one axes.

    Parameters
    ----------
    ax : matplotlib Axes or None
        Axes to draw on; None creates a figure with ``plt.subplots(**subplots_kwargs)``.
    caller : str
        What is plotting, for the error raised when matplotlib is missing.

    Returns
    -------
    figure : matplotlib Figure (or SubFigure)
    ax : matplotlib Axes
    """
    plt = _matplotlib(caller)
    if ax is None:
        return plt.subplots(**subplots_kwargs)
    return ax.figure, ax


def _figure_and_axes_grid(ax, n_panels: int, caller: str = "plotting", panel_size=3.0):
    """The figure and ``n_panels`` axes for a small-multiples plot.

    Parameters
    ----------
    ax : matplotlib Axes, array-like of Axes, or None
        Axes to draw on, exactly ``n_panels`` of them (any array shape; a single Axes when
        ``n_panels == 1``). None creates a grid of at most 4 columns with shared x and y
        axes, the unused cells removed.
    n_panels : int
        Number of panels needed.
    caller : str
        What is plotting, for error messages.
    panel_size : float, default=3.0
        Width and height in inches of each panel of a new figure.

    Returns
    -------
    figure : matplotlib Figure (or SubFigure)
    axes : ndarray of shape (n_panels,), dtype object
        The panels, in row-major order.

    Raises
    ------
    ValueError
        If ``ax`` does not hold exactly ``n_panels`` axes.
    """
    plt = _matplotlib(caller)
    if ax is None:
        ncols = min(n_panels, 4)
        nrows = -(-n_panels // ncols)
        figure, grid = plt.subplots(
            nrows,
            ncols,
            sharex=True,
            sharey=True,
            squeeze=False,
            figsize=(panel_size * ncols, panel_size * nrows),
        )
        grid = grid.ravel()
        for cell in range(n_panels, grid.shape[0]):
            grid[cell].remove()
            # the panel above an empty cell is the bottom of its column: label its x axis
            grid[cell - ncols].xaxis.set_tick_params(labelbottom=True)
        return figure, grid[:n_panels]
    axes = np.empty(1, dtype=object)
    if isinstance(ax, list | tuple | np.ndarray):
        axes = np.asarray(ax, dtype=object).ravel()
    else:
        axes[0] = ax
    if axes.shape[0] != n_panels:
        raise ValueError(
            f"{caller} draws {n_panels} panel(s) and needs as many axes; ax holds {axes.shape[0]}."
        )
    return axes[0].figure, axes


def _axes_below(ax, label: str, size: str = "30%", pad: float = 0.15, caller="plotting"):
    """An axes under ``ax``, sharing its x axis, carved out of ``ax``'s space.

    An axes already appended below ``ax`` under the same ``label`` is returned instead, so
    that several plots drawn on one ``ax`` share it.

    Parameters
    ----------
    ax : matplotlib Axes
    label : str
        Label of the new axes, by which it is found again.
    size : str, default="30%"
        Height of the new axes, relative to ``ax``.
    pad : float, default=0.15
        Space between the two, in inches.
    caller : str
        What is plotting, for the error raised when matplotlib is missing.

    Returns
    -------
    matplotlib Axes
    """
    _matplotlib(caller)
    for other in ax.figure.axes:
        if (
            other is not ax
            and other.get_label() == label
            and ax.get_shared_x_axes().joined(ax, other)
        ):
            return other
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    return make_axes_locatable(ax).append_axes(
        "bottom", size=size, pad=pad, sharex=ax, label=label
    )


def _class_colormap(n_classes: int, cmap=None, caller="plotting"):
    """A colormap with one colour per class, and the ``(vmin, vmax)`` that index it by code.

    Parameters
    ----------
    n_classes : int
    cmap : str, Colormap or None
        None takes the first ``n_classes`` colours of ``tab10`` (of ``tab20`` up to 20
        classes, ``viridis`` beyond); otherwise any colormap matplotlib accepts.
    caller : str
        What is plotting, for the error raised when matplotlib is missing.

    Returns
    -------
    cmap : Colormap
    limits : tuple of float
        ``(-0.5, n_classes - 0.5)``: class code ``k`` maps to the middle of its colour.
    """
    plt = _matplotlib(caller)
    from matplotlib.colors import ListedColormap

    if cmap is None:
        if n_classes <= 20:
            base = plt.get_cmap("tab10" if n_classes <= 10 else "tab20")
            cmap = ListedColormap(base.colors[:n_classes])
        else:
            cmap = plt.get_cmap("viridis").resampled(n_classes)
    elif isinstance(cmap, str):
        cmap = plt.get_cmap(cmap).resampled(n_classes)
    return cmap, (-0.5, n_classes - 0.5)
