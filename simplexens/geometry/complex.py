"""Simplicial complexes in parameter space: simplexes sharing vertices, their volumes, points.

A simplicial complex here is a list of simplexes of one dimension k, each given by the indices
of its k+1 vertices in one shared list of vertices, as in the mode-connecting complexes of
Section 4 of [1]_: trained modes :math:`w_0, \\ldots, w_{m-1}` joined through shared connecting
points :math:`\\theta_0, \\ldots, \\theta_{c-1}` by the simplexes
:math:`S(w_i, \\theta_0, \\ldots, \\theta_{c-1})`. The vertices are given like those of
:mod:`simplexens.geometry.simplex`: one tensor of shape ``(n_vertices, P)`` or a dict name ->
tensor of shape ``(n_vertices, *shape)``; a point of the complex is a coefficient row of length
``n_vertices`` that is zero outside the vertices of one simplex.

References
----------
.. [1] Benton, G. W., Maddox, W. J., Lotfi, S., and Wilson, A. G. "Loss Surface Simplexes for
   Mode Connecting Volumes and Fast Ensembling". ICML 2021. Section 4 (simplicial complexes
   connecting modes), Section 3.2 (volume regularisation and sampling).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence

import torch

from .simplex import Vertices, _entries, log_volume, sample_barycentric

__all__ = [
    "SimplicialComplex",
    "complex_log_volume",
    "complex_log_volumes",
    "connector_complex",
    "sample_complex",
]

WEIGHTINGS = ("volume", "equal")


def _index(value: object, what: str) -> int:
    """``value`` as a Python int (numpy and torch integers accepted, bools refused)."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an int; got {value!r}.")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be an int; got {value!r}.") from None


def _as_list(value: object, message: str) -> list:
    """``value`` as a list (sequences, arrays and tensors are accepted, strings are not)."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValueError(f"{message}; got {type(value).__name__}.")
    return list(value)


class SimplicialComplex:
    """Simplexes of one dimension over a shared, indexed list of vertices.

    Parameters
    ----------
    simplexes : sequence of sequence of int
        One entry per simplex (a nested list or tuple, an integer array or tensor): the
        indices of its vertices in ``range(n_vertices)``. At least one simplex; every simplex
        non-empty, without repeated indices, and all of the same size k+1. Two simplexes may
        not have the same set of vertices. Vertices used by no simplex are allowed (their
        coefficients are always 0).
    n_vertices : int
        Number of vertices in the shared list (>= 1).

    Attributes
    ----------
    simplexes : tuple of tuple of int
        The simplexes, in the given order and with their vertices in the given order.
    n_vertices : int
        Number of vertices.
    n_simplexes : int
        Number of simplexes.
    dimension : int
        k, the number of vertices per simplex minus 1.

    Raises
    ------
    ValueError
        Naming the problem: no simplexes, an empty simplex, a non-integer or out-of-range
        index, an index repeated within a simplex, simplexes of different sizes, or a
        simplex listed twice.

    Notes
    -----
    Instances are immutable, compare and hash by value, and pickle as plain objects.

    References
    ----------
    .. [1] Benton, Maddox, Lotfi, Wilson. "Loss Surface Simplexes for Mode Connecting Volumes
       and Fast Ensembling". ICML 2021, Section 4.
    """

    __slots__ = ("_indices", "_n_vertices", "_simplexes")

    def __init__(self, simplexes: Sequence[Sequence[int]], n_vertices: int) -> None:
        n_vertices = _index(n_vertices, "n_vertices")
        if n_vertices < 1:
            raise ValueError(f"n_vertices must be >= 1; got {n_vertices}.")
        simplex_list = _as_list(
            simplexes, "simplexes must be a sequence of sequences of vertex indices"
        )
        if len(simplex_list) == 0:
            raise ValueError("a simplicial complex needs at least one simplex; got none.")
        checked: list[tuple[int, ...]] = []
        seen: dict[frozenset[int], int] = {}
        for position, item in enumerate(simplex_list):
            simplex = _as_list(item, f"simplex {position} must be a sequence of vertex indices")
            if len(simplex) == 0:
                raise ValueError(f"simplex {position} is empty; it needs at least one vertex.")
            what = f"each vertex index in simplex {position}"
            indices = tuple(_index(i, what) for i in simplex)
            for i in indices:
                if not 0 <= i < n_vertices:
                    raise ValueError(
                        f"simplex {position} has vertex index {i}, out of range for "
                        f"{n_vertices} vertices (valid: 0..{n_vertices - 1})."
                    )
            if len(set(indices)) != len(indices):
                repeated = sorted({i for i in indices if indices.count(i) > 1})
                raise ValueError(f"simplex {position} repeats vertex index(es) {repeated}.")
            if len(indices) != len(checked[0] if checked else indices):
                raise ValueError(
                    f"all simplexes must have the same size (dimension); simplex 0 has "
                    f"{len(checked[0])} vertices but simplex {position} has {len(indices)}."
                )
            key = frozenset(indices)
            if key in seen:
                raise ValueError(
                    f"simplexes {seen[key]} and {position} have the same vertices "
                    f"{sorted(key)}; each simplex may appear only once."
                )
            seen[key] = position
            checked.append(indices)
        self._simplexes = tuple(checked)
        self._n_vertices = n_vertices
        self._indices = {}

    @property
    def simplexes(self) -> tuple[tuple[int, ...], ...]:
        return self._simplexes

    @property
    def n_vertices(self) -> int:
        return self._n_vertices

    @property
    def n_simplexes(self) -> int:
        return len(self._simplexes)

    @property
    def dimension(self) -> int:
        return len(self._simplexes[0]) - 1

    def indices(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Vertex indices of the simplexes, shape (n_simplexes, dimension + 1), int64."""
        # Cached per device: copying a Python list to a GPU waits for the device, which a
        # training step that samples the complex must not do.
        key = str(torch.device(device)) if device is not None else None
        if key not in self._indices:
            self._indices[key] = torch.tensor(self._simplexes, dtype=torch.int64, device=device)
        return self._indices[key]

    def incidence(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Which vertices each simplex has.

        Parameters
        ----------
        device : torch.device or str, optional
            Device of the result; default: torch's default device.

        Returns
        -------
        incidence : Tensor of shape (n_simplexes, n_vertices), bool
            ``incidence[j, i]`` is True when vertex i belongs to simplex j.
        """
        table = torch.zeros(self.n_simplexes, self._n_vertices, dtype=torch.bool, device=device)
        return table.scatter_(1, self.indices(device), True)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SimplicialComplex):
            return NotImplemented
        return self._simplexes == other._simplexes and self._n_vertices == other._n_vertices

    def __hash__(self) -> int:
        return hash((self._simplexes, self._n_vertices))

    def __repr__(self) -> str:
        return (
            f"SimplicialComplex({list(map(list, self._simplexes))}, n_vertices={self._n_vertices})"
        )

    def __getstate__(self) -> tuple[tuple[tuple[int, ...], ...], int]:
        return self._simplexes, self._n_vertices

    def __setstate__(self, state: tuple[tuple[tuple[int, ...], ...], int]) -> None:
        self._simplexes, self._n_vertices = state
        self._indices = {}


def _check_complex(complex: SimplicialComplex) -> None:
    if not isinstance(complex, SimplicialComplex):
        raise ValueError(f"complex must be a SimplicialComplex; got {type(complex).__name__}.")


def complex_log_volumes(vertices: Vertices, complex: SimplicialComplex) -> torch.Tensor:
    """Log volume :math:`\\log V(S_j)` of each simplex of the complex.

    Each simplex's rows are selected from the shared vertices and passed to
    :func:`simplexens.geometry.simplex.log_volume` (Gram determinant, float64, tensor by
    tensor). ``-lambda * complex_log_volumes(...).sum()`` is the volume regulariser of [1]_
    summed over the simplexes of the complex.

    Parameters
    ----------
    vertices : Tensor of shape (n_vertices, P) or dict of str to Tensor of shape \
(n_vertices, \\*shape)
        The complex's shared vertices, flat or as stacked per-parameter tensors.
    complex : SimplicialComplex
        The simplexes, indexing into ``vertices``.

    Returns
    -------
    log_volumes : Tensor of shape (n_simplexes,), float64
        On the vertices' device; differentiable with respect to the vertices. ``-inf`` for a
        degenerate simplex; 0.0 for every simplex of a complex of dimension 0.

    Raises
    ------
    ValueError
        For invalid vertices, a ``complex`` that is not a :class:`SimplicialComplex`, or a
        vertex count different from ``complex.n_vertices``.

    References
    ----------
    .. [1] Benton, Maddox, Lotfi, Wilson. "Loss Surface Simplexes for Mode Connecting Volumes
       and Fast Ensembling". ICML 2021, Sections 3.2 and 4.
    """
    _check_complex(complex)
    entries, n_vertices = _entries(vertices)
    if n_vertices != complex.n_vertices:
        raise ValueError(
            f"vertices hold {n_vertices} vertices but the complex has {complex.n_vertices}."
        )
    log_volumes = []
    for simplex in complex.simplexes:
        rows = list(simplex)
        if isinstance(vertices, torch.Tensor):
            selected: Vertices = vertices[rows]
        else:
            selected = {name: t[rows] for name, t in entries.items()}
        log_volumes.append(log_volume(selected))
    return torch.stack(log_volumes)


def complex_log_volume(vertices: Vertices, complex: SimplicialComplex) -> torch.Tensor:
    """Log of the complex's total volume, :math:`\\log \\sum_j V(S_j)`.

    The ``logsumexp`` of :func:`complex_log_volumes`. All simplexes share one dimension k, so
    their k-dimensional volumes add up meaningfully; overlaps between simplexes are not
    removed (the sum counts an overlapping region once per simplex containing it).

    Parameters
    ----------
    vertices : Tensor of shape (n_vertices, P) or dict of str to Tensor of shape \
(n_vertices, \\*shape)
        The complex's shared vertices.
    complex : SimplicialComplex
        The simplexes, indexing into ``vertices``.

    Returns
    -------
    log_volume : Tensor of shape (), float64
        Differentiable with respect to the vertices; ``-inf`` when every simplex is
        degenerate.

    References
    ----------
    .. [1] Benton, Maddox, Lotfi, Wilson. "Loss Surface Simplexes for Mode Connecting Volumes
       and Fast Ensembling". ICML 2021, Section 4.
    """
    return torch.logsumexp(complex_log_volumes(vertices, complex), dim=0)


def sample_complex(
    n_samples: int,
    complex: SimplicialComplex,
    log_volumes: torch.Tensor | None = None,
    weighting: str = "volume",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    check: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random points of the complex as coefficient rows over its shared vertices.

    For each sample a simplex j is drawn, then Dirichlet(1, ..., 1) weights inside it
    (:func:`simplexens.geometry.simplex.sample_barycentric`), which are scattered into the
    columns of that simplex's vertices; every other column is exactly 0. The point itself is
    ``simplex_points(vertices, coefficients)``.

    With ``weighting="volume"`` simplex j is drawn with probability
    :math:`V(S_j) / \\sum_l V(S_l)` (a softmax of ``log_volumes``, in float64), so the points are
    uniform over the complex (counting overlaps once per simplex). With ``weighting="equal"``
    every simplex is drawn with probability 1 / n_simplexes, as in the reference code of [1]_;
    this is *not* uniform over the complex when the volumes differ: small simplexes are
    over-represented.

    Parameters
    ----------
    n_samples : int
        Number of points S (>= 0).
    complex : SimplicialComplex
        The simplexes to sample from.
    log_volumes : Tensor of shape (n_simplexes,), optional
        :math:`\\log V(S_j)`, e.g. ``complex_log_volumes(vertices, complex)`` (it is detached).
        Required when ``weighting="volume"``; ignored when ``weighting="equal"``. ``-inf``
        marks a degenerate simplex, which is never drawn; NaN and ``+inf`` are refused.
    weighting : {"volume", "equal"}, default="volume"
        How a simplex is chosen, see above.
    generator : torch.Generator, optional
        The only source of randomness when given (it must live on ``device``); the global
        torch RNG is used only when it is None. The simplexes are drawn first, then the
        weights.
    device : torch.device or str, optional
        Device of the results; default: the device of ``log_volumes`` when given, else
        torch's default device.
    dtype : torch.dtype, default=torch.float32
        Floating dtype of the coefficients.
    check : bool, default=True
        Check the values of ``log_volumes`` (one host synchronisation). ``False`` skips it,
        for training steps, where no step may wait for the device.

    Returns
    -------
    coefficients : Tensor of shape (n_samples, n_vertices)
        Non-negative rows summing to 1, non-zero only in the columns of the chosen simplex's
        vertices.
    simplex_index : Tensor of shape (n_samples,), int64
        The simplex each row was drawn from, an index into ``complex.simplexes``.

    Raises
    ------
    ValueError
        For a negative ``n_samples``, an unknown ``weighting``, ``log_volumes`` missing (with
        ``weighting="volume"``), of the wrong shape or holding NaN or ``+inf``, or every
        simplex degenerate (all ``log_volumes`` ``-inf``).

    Notes
    -----
    With ``weighting="volume"`` the ``log_volumes`` are checked with one host
    synchronisation.

    References
    ----------
    .. [1] Benton, Maddox, Lotfi, Wilson. "Loss Surface Simplexes for Mode Connecting Volumes
       and Fast Ensembling". ICML 2021, Sections 3.2 and 4.
    """
    _check_complex(complex)
    n_samples = _index(n_samples, "n_samples")
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0; got {n_samples}.")
    if weighting not in WEIGHTINGS:
        valid = ", ".join(repr(name) for name in WEIGHTINGS)
        raise ValueError(f"unknown weighting {weighting!r}; valid weightings are {valid}.")
    if device is None and isinstance(log_volumes, torch.Tensor):
        device = log_volumes.device
    n_simplexes = complex.n_simplexes

    if weighting == "volume":
        if log_volumes is None:
            raise ValueError(
                "weighting='volume' needs log_volumes, e.g. complex_log_volumes(vertices, "
                "complex); use weighting='equal' to choose simplexes with equal probability."
            )
        if not isinstance(log_volumes, torch.Tensor) or tuple(log_volumes.shape) != (n_simplexes,):
            shape = tuple(log_volumes.shape) if isinstance(log_volumes, torch.Tensor) else None
            raise ValueError(
                f"log_volumes must be a tensor of shape ({n_simplexes},), one per simplex; "
                f"got {shape if shape is not None else type(log_volumes).__name__}."
            )
        log_v = log_volumes.detach().to(device=device, dtype=torch.float64)
        if check:
            _check_log_volumes(log_v)
        if n_samples == 0:
            chosen = torch.zeros(0, dtype=torch.int64, device=device)
        else:
            # softmax subtracts the maximum: stable for any finite spread of log volumes, and
            # exactly 0 for -inf entries.
            probabilities = torch.softmax(log_v, dim=0)
            chosen = torch.multinomial(
                probabilities, n_samples, replacement=True, generator=generator
            )
    else:
        chosen = torch.randint(
            n_simplexes, (n_samples,), generator=generator, device=device, dtype=torch.int64
        )

    n_simplex_vertices = complex.dimension + 1
    weights = sample_barycentric(
        n_samples, n_simplex_vertices, generator=generator, device=device, dtype=dtype
    )
    columns = complex.indices(device=chosen.device)[chosen]
    coefficients = torch.zeros(n_samples, complex.n_vertices, dtype=dtype, device=chosen.device)
    coefficients.scatter_(1, columns, weights)
    return coefficients, chosen


def _check_log_volumes(log_v: torch.Tensor) -> None:
    """Refuse NaN or +inf log-volumes, and a complex without volume (one host sync)."""
    has_bad, has_finite = torch.stack(
        [(torch.isnan(log_v) | (log_v == math.inf)).any(), torch.isfinite(log_v).any()]
    ).tolist()
    if has_bad:
        raise ValueError(f"log_volumes contain NaN or +inf: {log_v.tolist()}.")
    if not has_finite:
        raise ValueError(
            "every simplex of the complex is degenerate (all log_volumes are -inf); "
            "there is no volume to sample from."
        )


def connector_complex(n_modes: int, n_connectors: int) -> SimplicialComplex:
    """The complex joining ``n_modes`` modes through ``n_connectors`` shared connecting points.

    Vertices are ordered ``[w_0, ..., w_{m-1}, theta_0, ..., theta_{c-1}]`` (modes first,
    then connectors) and the simplexes are :math:`S(w_i, \\theta_0, \\ldots, \\theta_{c-1})` for
    each mode i, so every simplex has dimension c and all share the face spanned by the
    connectors ([1]_, Section 4). With 2 modes and 1 connector this is the polygonal chain
    :math:`w_0 - \\theta_0 - w_1`; with 0 connectors each simplex is a single mode.

    Parameters
    ----------
    n_modes : int
        Number of modes m (>= 1).
    n_connectors : int
        Number of connecting vertices c (>= 0).

    Returns
    -------
    complex : SimplicialComplex
        ``n_vertices = m + c``, simplexes ``(i, m, m+1, ..., m+c-1)`` for ``i = 0..m-1``.

    References
    ----------
    .. [1] Benton, Maddox, Lotfi, Wilson. "Loss Surface Simplexes for Mode Connecting Volumes
       and Fast Ensembling". ICML 2021, Section 4.
    """
    n_modes = _index(n_modes, "n_modes")
    n_connectors = _index(n_connectors, "n_connectors")
    if n_modes < 1:
        raise ValueError(f"n_modes must be >= 1; got {n_modes}.")
    if n_connectors < 0:
        raise ValueError(f"n_connectors must be >= 0; got {n_connectors}.")
    connectors = tuple(range(n_modes, n_modes + n_connectors))
    return SimplicialComplex(
        [(mode, *connectors) for mode in range(n_modes)], n_vertices=n_modes + n_connectors
    )
