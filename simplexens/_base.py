"""Shared scikit-learn plumbing of every estimator, classifier or regressor.

:class:`BaseEnsemble` owns everything that is neither a method's own training nor the head:
skorch parameters and their routing, input validation, seeds, the module recipe, the
:class:`~simplexens.backends.functional.ParameterStack` of members, BatchNorm recalibration,
warm start, progress and the divergence check. A head (:class:`~simplexens._classifier.
ClassifierHead` or :class:`~simplexens._regressor.RegressorHead`) supplies what depends on
the target: its checks and encoding, the module's output width, the loss that judges
divergence, and prediction. An estimator is ``Head + Method``, the method a subclass of
:class:`BaseEnsemble` that trains its members.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from ._init_modes import resolve_init_modes
from ._inputs import (
    CHECK_ROWS,
    prediction_rows,
    recalibration_rows,
    row_weights,
    training_rows,
)
from ._params import (
    Integer,
    Options,
    Real,
    check_parameters,
    check_routed_names,
    check_routed_scalars,
)
from ._warm import WarmState, check_growth, continued_rng, counts_of, fingerprint, spec_hash
from .backends.batching import batch_size_for, batch_slices
from .backends.batchnorm import batchnorm_layers, recalibrate_batchnorm
from .backends.functional import PRECISIONS, ParameterStack, module_tensors
from .backends.modules import ModuleSpec
from .backends.parallel import private_rng
from .backends.progress import Progress, progress_bar
from .backends.rows import WeightedRows, is_row_source
from .backends.skorch import DIVERGENCE_RATIO, Phase, check_callbacks, fixed_split
from .exceptions import DivergenceError

#: Prefixes of the parameters routed to skorch, exactly as skorch names them.
ROUTED_PREFIXES = (
    "module__",
    "optimizer__",
    "criterion__",
    "iterator_train__",
    "iterator_valid__",
    "callbacks__",
    "dataset__",
    "compile__",
)

#: skorch parameters passed to every member's net as they are when given (as keywords):
#: the loader classes, the Dataset class that wraps arrays, and ``torch.compile``.
SKORCH_PASSTHROUGH = ("iterator_train", "iterator_valid", "dataset", "compile")

#: Training rows on which the final members' loss is compared with an untrained network's.
LOSS_ROWS = 256

#: Devices a network can be trained on.
COMPUTE_DEVICES = ("cpu", "cuda", "mps")

BATCH_SIZE = Integer(1, also=(-1,))

#: Constraints of the training parameters all estimators share.
TRAINING_CONSTRAINTS = {
    "lr": Real(0, None, "neither"),
    "max_epochs": Integer(1),
    "batch_size": BATCH_SIZE,
    "verbose": Integer(0),
    "n_jobs": Integer(none=True, exclude=(0,)),
    "working_memory": Real(0, None, "neither", none=True),
    "member_memory": Real(0, None, "neither", none=True),
    "precision": Options(tuple(PRECISIONS)),
}

#: Parameters passed to every member's skorch net as they are.
NET_PARAMETERS = (
    "criterion",
    "optimizer",
    "lr",
    "max_epochs",
    "batch_size",
    "device",
    "callbacks",
    "verbose",
    "train_split",
    "precision",
)


@dataclass
class FitResult:
    """What a method's training hands back to :meth:`BaseEnsemble.fit`.

    Attributes
    ----------
    members : list of dict of str to Tensor
        One dict of module tensors per member (CPU or device).
    epochs_spent : int
        Passes over the training data spent by gradient training, all modes and phases.
    attributes : dict
        Method-specific fitted attributes (names ending in ``_``).
    recalibrate : bool
        Recompute every member's BatchNorm statistics on the training data (members that
        were never trained as such: simplex points, SWAG samples).
    appended : bool
        In a warm refit, ``members`` come after the fitted ones (else they replace them).
    """

    members: list
    epochs_spent: int
    attributes: dict = field(default_factory=dict)
    recalibrate: bool = False
    appended: bool = False


@dataclass
class TrainingData:
    """Validated training data and what was learnt about it.

    Attributes
    ----------
    X, y : ndarray
        All rows, validation rows included; ``y`` encoded by the head (class indices, or
        standardised float32 targets of shape (n_samples, n_targets)).
    classes : ndarray or None
        The labels, in the order of the encoding (None for a regressor).
    rows : ndarray or None
        Indices of the training rows (all but the validation rows).
    net : dict
        Settings every member's net gets on top of the estimator's: the split applied once,
        loader settings.
    progress : Progress
        The handle members report their epochs to.
    untrained : float or None
        The untrained network's loss on training rows, in the training criterion's units:
        divergence during training is judged against it.
    init : list of dict or None
        The networks given as ``init_modes``, checked and copied (parameters and buffers).
    scaling : TargetScaling or None
        A regressor's standardisation of ``y`` (None for a classifier).
    raw_y : ndarray or None
        A regressor's ``y`` as given, which a validation split standardises again on the
        training rows alone (None for a classifier).
    recalibration : ndarray, DatasetRows or None
        ``fit``'s ``recalibration_X``, checked: the inputs of BatchNorm recalibration (None:
        the training rows).
    warm : dict or None
        In a warm refit, ``{count: (fitted, now)}`` of the counts that may grow: the method
        trains only what is new (see :meth:`BaseEnsemble._fit_members`).
    """

    X: np.ndarray
    y: np.ndarray
    classes: np.ndarray
    rows: np.ndarray | None = None
    net: dict = field(default_factory=dict)
    progress: Progress = field(default_factory=Progress)
    untrained: float | None = None
    init: list | None = None
    warm: dict | None = None
    recalibration: object = None
    scaling: object = None
    raw_y: object = None


class BaseEnsemble(BaseEstimator):
    """Base of the simplexens estimators; not for direct use.

    A method subclasses it: it checks its own parameters in :meth:`_check_method_params` and
    trains in :meth:`_fit_members`. An estimator combines a head and a method
    (``class DeepEnsembleRegressor(RegressorHead, DeepEnsemble)``), lists every parameter in
    its ``__init__`` (scikit-learn reads the signature) and stores them with
    :func:`store_parameters`. The head implements the abstract hooks below (targets, output
    width and check, loss, fitted target state) and the ``predict*`` methods.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # densified batch by batch
        return tags

    # -- parameters ------------------------------------------------------------------------

    def get_params(self, deep=True):
        """Get parameters, including the routed ``module__*``-style ones."""
        params = super().get_params(deep=deep)
        params.update(self._routed())
        return params

    def set_params(self, **params):
        """Set parameters, including the routed ``module__*``-style ones."""
        routed = {k: v for k, v in params.items() if _is_routed(k)}
        vars(self).update(routed)
        super().set_params(**{k: v for k, v in params.items() if k not in routed})
        return self

    def _routed(self, prefix: str = "") -> dict:
        """Routed parameters; with ``prefix`` (e.g. ``"module"``), those of one route, unprefixed.

        Every public attribute that is neither a named parameter nor fitted state counts, so
        that a misspelt keyword survives ``clone`` and is reported by ``fit``.
        """
        named = self._get_param_names()
        routed = {
            k: v
            for k, v in vars(self).items()
            if k not in named and not k.startswith("_") and not k.endswith("_")
        }
        if not prefix:
            return routed
        head = prefix + "__"
        return {k[len(head) :]: v for k, v in routed.items() if k.startswith(head)}

    def _net_kwargs(self, data: TrainingData) -> dict:
        """Arguments of each member's skorch net, ``module`` and ``module__*`` excluded.

        The training parameters, with the split and loader settings of ``data``.
        """
        kwargs = {name: getattr(self, name) for name in NET_PARAMETERS}
        kwargs.update({k: v for k, v in self._routed().items() if not k.startswith("module__")})
        kwargs["criterion"] = self._criterion()
        kwargs.update(data.net)
        for name in ("batch_size", "iterator_train__batch_size", "iterator_valid__batch_size"):
            if name in kwargs:  # numpy integers pass the checks; torch's loader wants an int
                kwargs[name] = int(kwargs[name])
        return kwargs

    def _phases(self, data: TrainingData, first: int = 0) -> list[Phase]:
        """Each trained member's name in messages, and where it reports progress: members
        ``first`` (the count fitted before, in a warm refit) to ``_n_trained() - 1``."""
        rates, n = (("lr", self.lr),), self._n_trained()
        name, reference = type(self).__name__, data.untrained
        return [
            Phase(name, i, n, "training", rates, reference, progress=data.progress)
            for i in range(first, n)
        ]

    def _fitted_count(self, data: TrainingData, count: str) -> int:
        """How many of ``count`` were fitted before (0 unless in a warm refit)."""
        return data.warm[count][0] if data.warm else 0

    def _progress_bar(self):
        return progress_bar(
            self._planned_epochs(),
            self.verbose,
            self.n_jobs,
            n_members=self._progress_members(),
            desc=self._member_name,
        )

    def _progress_members(self) -> int:
        """Parts of the fit the progress bar counts (the trained members by default)."""
        return self._n_trained()

    #: What a trained member is called in progress labels.
    _member_name = "member"

    @abstractmethod
    def _n_trained(self) -> int:
        """Number of networks trained independently (members, modes, runs)."""

    @abstractmethod
    def _planned_epochs(self) -> int:
        """Epochs the fit will train if nothing stops it early (for the progress bar)."""

    def _check_params(self) -> None:
        routed = self._routed()
        check_routed_names(
            routed, ROUTED_PREFIXES, self._get_param_names(), exact=SKORCH_PASSTHROUGH
        )
        check_parameters(
            self, {**TRAINING_CONSTRAINTS, **self._head_constraints, **self._constraints}
        )
        check_routed_scalars(routed)
        for route in ("iterator_train", "iterator_valid"):
            if "batch_size" in self._routed(route):
                BATCH_SIZE.check(f"{route}__batch_size", self._routed(route)["batch_size"])
        for name, value in (("criterion", self._criterion()), ("optimizer", self.optimizer)):
            if not callable(value):
                raise TypeError(f"{name} must be a class or callable, got {value!r}.")
        if self.train_split is not None and not callable(self.train_split):
            raise TypeError(
                f"train_split must be None or a callable such as skorch's ValidSplit, got "
                f"{self.train_split!r}."
            )
        check_callbacks(self.callbacks, self.train_split)
        _check_device(self.device)
        self._check_head_params()
        self._check_method_params()
        if isinstance(self.init_modes, BaseEnsemble) and self.init_modes._head != self._head:
            raise ValueError(
                f"init_modes is a {self.init_modes._head} ({type(self.init_modes).__name__}); "
                f"{type(self).__name__} is a {self._head}, whose module outputs mean "
                "something else. Start from networks of a "
                f"{self._head} (or their state dicts)."
            )

    #: The method's own parameters: name -> constraint (see :mod:`simplexens._params`).
    _constraints: ClassVar[dict] = {}
    #: The head's own parameters (a regressor's ``likelihood``), likewise.
    _head_constraints: ClassVar[dict] = {}

    def _check_method_params(self) -> None:
        """Checks across the method's parameters that a table cannot express."""

    # -- fit --------------------------------------------------------------------------------

    def fit(self, X, y=None, sample_weight=None, recalibration_X=None):
        """Train the ensemble.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, ...), sparse matrix, \
                or torch Dataset
            Training inputs: numpy arrays, pandas frames, lists; N-dimensional inputs such as
            images ``(n, C, H, W)`` are passed to the module as they are. Cast to float32.
            A scipy sparse matrix is densified batch by batch. A map-style torch ``Dataset``
            is read item by item at every epoch, so its transforms (augmentation, reading
            from disk) run as in any torch loop; its items are ``(x, y)`` pairs, or ``x`` /
            ``(x, anything)`` when ``y`` is given. Its first rows are checked as arrays are
            (numeric, finite, one shape).
        y : array-like of shape (n_samples,), default=None
            Labels of any type; ``predict`` returns them as given. Required with arrays; with
            a Dataset, None reads the labels from its items (one pass over it), and a given
            ``y`` is used instead of them.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights of the rows in the training loss of every phase (see
            ``class_weight``, which multiplies them). A row of weight 2 counts as two copies
            of it in its batch's loss.
        recalibration_X : array-like of shape (n_samples, ...) or torch Dataset, default=None
            The inputs BatchNorm statistics are recomputed on, for the members that need it
            (simplex and complex points, curve points, SWAG samples, and every member with
            ``recalibrate_bn=True``). None: the training rows, read as training reads them,
            so with an augmenting Dataset the statistics see augmented inputs; pass the
            same data without augmentation here to match what prediction sees. Rows of the
            training inputs' shape; labels, if a Dataset yields them, are ignored.

        Returns
        -------
        self : object
            The fitted estimator.

        Raises
        ------
        ValueError, TypeError
            Invalid parameters or data, before any training.
        simplexens.exceptions.DivergenceError
            Training diverged: a non-finite or exploding training loss, non-finite weights
            after a phase, or members with non-finite outputs. The message names the
            member, the phase and the learning rate to lower.
        KeyboardInterrupt
            Ctrl-C stops the whole fit, with ``n_jobs=1`` as with worker processes.

        Notes
        -----
        A failed or interrupted ``fit`` leaves the estimator unfitted (the state of an
        earlier fit is removed too) and the caller's arrays unmodified.

        With a Dataset, BatchNorm recalibration (of simplex points and SWAG samples) and
        the divergence check read the training items through the same Dataset, its
        transforms included. Worker processes (``n_jobs``) receive the Dataset by pickling.

        With ``warm_start=True`` on a fitted estimator, ``fit`` adds what the raised counts
        ask for (see ``warm_start``) and keeps the fitted state if it fails.

        Not supported: ``partial_fit``. Pickling a fitted estimator
        stores the module's class by reference: define it in an importable module, not in
        ``__main__`` or a notebook cell, to load the pickle elsewhere.
        """
        if self.warm_start and hasattr(self, "_warm_"):
            return self._fit_more(X, y, sample_weight, recalibration_X)
        self._forget_fit()
        try:
            self._check_params()
            data = self._validate_training_data(X, y, sample_weight, recalibration_X)
            checked = data  # what a warm refit's data are compared with
            spec, template = self._module_recipe(data)
            rng = check_random_state(self.random_state)
            data, split_seed = self._plan_batches(data, template, rng)
            init = self._resolve_init_modes(template)
            result, stack = self._train(spec, template, data, rng, init=init)
        except BaseException:
            self._forget_fit()
            raise
        self.input_shape_ = data.X.shape[1:]
        self.module_spec_ = spec
        self._set_targets(data)
        data_hash = fingerprint(checked.X, checked.y, self._target_key(checked))
        self._warm_ = WarmState(
            copy.deepcopy(rng), split_seed, data_hash, {}, spec_hash(spec), self._head_settings()
        )
        self._set_fitted(stack, result, int(result.epochs_spent))
        return self

    def _fit_more(self, X, y, sample_weight, recalibration_X):
        """A warm refit: train what the raised counts add, keep the rest (see ``fit``).

        A failure leaves the fitted state as it was (the input checks' ``n_features_in_``
        and ``feature_names_in_`` included).
        """
        checked = ("n_features_in_", "feature_names_in_")
        kept = {k: vars(self)[k] for k in checked if k in vars(self)}
        try:
            self._grow(X, y, sample_weight, recalibration_X)
        except BaseException:
            for name in checked:
                vars(self).pop(name, None)
            vars(self).update(kept)
            raise
        return self

    def _grow(self, X, y, sample_weight, recalibration_X) -> None:
        self._check_params()
        data = self._validate_training_data(X, y, sample_weight, recalibration_X)
        spec, template = self._module_recipe(data)
        state = self._warm_
        growth = check_growth(
            self, state, fingerprint(data.X, data.y, self._target_key(data)), spec
        )
        if all(now == fitted for fitted, now in growth.values()):
            return
        rng = continued_rng(state)
        data, split_seed = self._plan_batches(data, template, rng, state.split_seed, warm=True)
        result, stack = self._train(spec, template, data, rng, warm=growth)
        if result.appended:  # on the CPU: the two stacks may live on different devices
            old = [self.members_.member(i, device="cpu") for i in range(self.n_members_)]
            new = [stack.member(i, device="cpu") for i in range(stack.n_members)]
            stack = self._stack(template, old + new)
        self._set_fitted(stack, result, self.epochs_spent_ + int(result.epochs_spent))
        state.rng, state.split_seed = rng, split_seed

    def _train(self, spec, template, data, rng, init=None, warm=None):
        """Train (``_fit_members``), stack, recalibrate and check: ``(result, stack)``."""
        untrained = self._untrained_loss(template, data)
        with self._progress_bar() as progress:
            reference = self._in_criterion_units(untrained, data)
            data = dataclasses.replace(
                data, progress=progress, untrained=reference, init=init, warm=warm
            )
            result = self._fit_members(spec, data, rng)
        stack = self._stack(template, result.members)
        if result.recalibrate:
            source = data.recalibration
            rows = data.rows if source is None else np.arange(len(source))
            X = data.X if source is None else source
            recalibrate_batchnorm(stack, self._batches(X, rows, stack))
        self._check_final_members(stack, data, untrained)
        return result, stack

    def _stack(self, template: nn.Module, members: list) -> ParameterStack:
        """The members on ``device``, grouped within ``member_memory``, at ``precision``."""
        return ParameterStack.from_members(
            template,
            members,
            self.device,
            member_memory=self.member_memory,
            precision=self.precision,
        )

    def _set_fitted(self, stack, result, epochs_spent: int) -> None:
        self.members_ = stack
        self.n_members_ = stack.n_members
        self.epochs_spent_ = epochs_spent
        vars(self).update(result.attributes)
        if hasattr(self, "_warm_"):
            self._warm_.counts = self._fitted_counts()

    def _fitted_counts(self) -> dict:
        """The counts a warm refit compares against (those just fitted)."""
        return counts_of(self)

    #: Counts that a warm refit may raise, and counts it must find unchanged (with the reason).
    _growable: ClassVar[tuple] = ()
    _fixed_when_warm: ClassVar[tuple] = ()
    _fixed_when_warm_reason = ""

    def _plan_batches(
        self, data: TrainingData, template: nn.Module, rng, split_seed=None, warm=False
    ) -> tuple[TrainingData, int | None]:
        """Split off the validation rows once, and check the training batches.

        ``train_split`` is applied here, once per fit, so that every member and every phase
        holds out the same rows (a ``ValidSplit`` without a ``random_state`` is seeded from
        the estimator's ``random_state``). With BatchNorm in the module, a last training batch
        of one row (which BatchNorm cannot normalise) is dropped from every epoch. ``warm``:
        a warm refit, whose targets are encoded as the fitted members' were.
        """
        split = None
        if self.train_split is not None:
            if split_seed is None:
                split_seed = int(rng.randint(np.iinfo(np.int32).max))
            # The targets as given (a regressor's raw y): a Dataset the split builds from
            # them is in y's units, as a validation Dataset of the user's is.
            y = data.y if data.raw_y is None else data.raw_y
            split = fixed_split(self.train_split, data.X, y, split_seed)
        rows = np.arange(len(data.X)) if split is None else split.train_rows(len(data.X))
        self._check_training_rows(data, rows, split)
        data, split = self._training_targets(data, rows, split, warm)
        data = dataclasses.replace(data, rows=rows, net={**data.net, "train_split": split})
        step, drop = self._training_loader(data)
        if drop and len(rows) < step:
            raise ValueError(
                f"iterator_train__drop_last=True with batches of {step} rows leaves no training "
                f"batch: there are only {len(rows)} training rows. Lower batch_size."
            )
        if batchnorm_layers(template):
            data.net.update(_batchnorm_loader(step, drop, len(rows)))
        return data, split_seed

    def _training_loader(self, data: TrainingData) -> tuple[int, bool]:
        """Rows per training batch and whether the last, smaller batch is dropped."""
        loader = self._routed("iterator_train")
        step = int(loader.get("batch_size", self.batch_size))
        step = len(data.rows) if step == -1 else step
        drop = loader.get("drop_last", False) or data.net.get("iterator_train__drop_last", False)
        return step, bool(drop)

    def _check_final_members(self, stack: ParameterStack, data: TrainingData, untrained) -> None:
        """Raise :class:`DivergenceError` if a member's outputs are not finite, or if its loss
        on training rows exceeds ``DIVERGENCE_RATIO`` times the untrained network's (when that
        is positive)."""
        losses = self._member_losses(stack, data, self.working_memory)
        # A ratio needs a positive reference: a Gaussian likelihood's loss may be negative.
        bad = ~torch.isfinite(losses) | ((losses > DIVERGENCE_RATIO * untrained) & (untrained > 0))
        if bool(bad.any()):
            ids = bad.nonzero().flatten().tolist()
            worst = losses[ids[0]].item()
            raise DivergenceError(
                f"{type(self).__name__} diverged: member(s) {', '.join(map(str, ids))} of "
                f"{stack.n_members} (indices into members_) have a loss of {worst:.4g} on "
                f"training rows, against {untrained:.4g} for an untrained network. "
                f"{self._divergence_advice()}"
            )

    def _divergence_advice(self) -> str:
        return f"Try a lower lr (now {self.lr})."

    @abstractmethod
    def _fit_members(
        self, spec: ModuleSpec, data: TrainingData, rng: np.random.RandomState
    ) -> FitResult:
        """Train the method's members."""

    def _batches(self, X, rows: np.ndarray, stack: ParameterStack):
        """``X[rows]`` in consecutive batches for BatchNorm recalibration, on the stack's device.

        ``X`` is an array or :class:`~simplexens.backends.rows.DatasetRows` (read a batch at a
        time). All the rows, in order, sized as prediction sizes them (not by the training
        batch size): ``iterator_valid__batch_size`` when set (``-1``: all rows at once), else
        as many rows as ``working_memory`` allows for all members together
        (:func:`batch_size_for`). With BatchNorm layers in the module, no batch has a single
        row (BatchNorm in training mode cannot normalise one value per channel): batches hold
        at least 2 rows, and a last batch of 1 row is merged into the one before. Lazy: nothing
        is measured unless the batches are read.
        """
        size = self._routed("iterator_valid").get("batch_size")
        step = batch_size_for(stack, _Probe(X, rows), size, self.working_memory)
        min_rows = 2 if batchnorm_layers(stack.template) else 1
        for part in batch_slices(len(rows), step, min_rows):
            yield torch.tensor(X[rows[part]], device=stack.device)

    def _forget_fit(self) -> None:
        params = self.get_params(deep=False)
        for name in [k for k in vars(self) if k.endswith("_") and k not in params]:
            delattr(self, name)

    def _validate_training_data(
        self, X, y, sample_weight=None, recalibration_X=None
    ) -> TrainingData:
        owner = type(self).__name__
        if is_row_source(X):
            X, y = training_rows(X, y, owner, multi_output=self._multi_output)
            self.n_features_in_ = X.shape[1]
        else:
            X, y = validate_data(
                self,
                X,
                y,
                dtype=np.float32,
                allow_nd=True,
                ensure_min_samples=1,
                y_numeric=self._multi_output,
                multi_output=self._multi_output,
            )
            # Read-only inputs (memory maps, pandas' copy-on-write arrays) are copied once,
            # since torch cannot wrap them; the caller's arrays are never written to.
            X = np.require(X, requirements="W")
        if sp.issparse(y):
            raise ValueError(f"{owner} needs a dense y; got a sparse matrix.")
        self._check_targets(y)
        weights = row_weights(getattr(self, "class_weight", None), y, sample_weight, len(y))
        targets = self._encode_targets(y, weights)
        recalibration = recalibration_rows(recalibration_X, X.shape[1:], owner)
        if weights is None:
            return TrainingData(X, **targets, recalibration=recalibration)
        if "reduction" in self._routed("criterion"):
            raise ValueError(
                "sample_weight and class_weight weight the criterion's per-row losses: leave "
                f"criterion__reduction unset (it is {self._routed('criterion')['reduction']!r})."
            )
        net = {"criterion__reduction": "none"}
        X = WeightedRows(X, weights)
        return TrainingData(X, **targets, net=net, recalibration=recalibration)

    def _module_recipe(self, data: TrainingData) -> tuple[ModuleSpec, nn.Module]:
        """Resolve the module recipe and check the module against the data.

        Returns the recipe and one module built from it on ``device``, the template of the
        member stack.
        """
        spec = ModuleSpec.resolve(
            self.module,
            self._routed("module"),
            n_features_in=data.X.shape[1],
            n_classes=self._output_width(data),
        )
        spec = self._head_spec(spec, data)
        with private_rng(0, self.device):
            template = spec.build().to(self.device)
        out = _module_output(template, data.X[:CHECK_ROWS], spec, self.device)
        self._check_output(out, spec, data)
        if not out.is_floating_point():
            raise ValueError(
                f"the module returned a {out.dtype} output; it must return floating-point "
                "values (logits, or means and scales), with no rounding, argmax or integer "
                "cast in forward."
            )
        self._check_module(template)
        return spec, template

    def _check_module(self, template: nn.Module) -> None:
        """Checks of the built module that are the method's own (e.g. its parameter count)."""

    # -- init_modes -------------------------------------------------------------------------

    #: The parameter that counts the networks ``init_modes`` replaces.
    _init_count_name = "n_modes"

    def _init_count(self) -> int:
        """How many networks ``init_modes`` must hold."""
        return self._n_trained()

    def _resolve_init_modes(self, template: nn.Module) -> list | None:
        """``init_modes`` checked against the module and copied (None when not given)."""
        if self.init_modes is None:
            return None
        return self._resolve_modes(self.init_modes, template)

    def _resolve_modes(self, modes, template: nn.Module) -> list:
        """``modes`` (any form ``init_modes`` takes) checked against ``template`` and copied."""
        return resolve_init_modes(
            modes,
            template,
            expected=self._init_count(),
            count_name=self._init_count_name,
            owner=type(self).__name__,
        )

    def _init_mode_tensors(self) -> list[dict[str, torch.Tensor]]:
        """The networks this estimator trained as ordinary networks, as tensor dicts (the
        members by default; methods with modes return their modes)."""
        check_is_fitted(self)
        return [
            {name: t.to("cpu", copy=True) for name, t in self.members_.member(i).items()}
            for i in range(self.n_members_)
        ]

    def mode_state_dicts(self) -> list[dict[str, torch.Tensor]]:
        """The trained networks another estimator can start from, as state dicts.

        What ``init_modes=<this estimator>`` passes on: DeepEnsemble's members, ESPRO's and
        SPRO's modes, a curve's endpoints, SWAG's SWA means, FGE's snapshots. Use it to keep
        them through ``clone`` (which copies an estimator given as ``init_modes`` without
        its fitted state, as inside ``GridSearchCV``).

        Returns
        -------
        list of dict of str to Tensor
            Parameters and buffers of each network, CPU copies.
        """
        return [
            {name: t.to("cpu", copy=True) for name, t in mode.items()}
            for mode in self._init_mode_tensors()
        ]

    # -- the head's hooks -------------------------------------------------------------------

    #: Whether ``y`` may have several columns (and must be numeric): regressors.
    _multi_output = False

    @abstractmethod
    def _criterion(self):
        """The criterion class every member's net trains with."""

    def _check_head_params(self) -> None:
        """Checks of the head's parameters (and its ``criterion__*``) beyond the table."""

    def _check_targets(self, y) -> None:
        """Checks of ``y`` that come before the sample and class weights are computed."""

    @abstractmethod
    def _encode_targets(self, y: np.ndarray, weights: np.ndarray | None) -> dict:
        """``y`` checked and encoded: the ``TrainingData`` fields ``y`` and ``classes`` or
        ``scaling``."""

    @abstractmethod
    def _output_width(self, data: TrainingData) -> int:
        """Columns the module must output (filled as its ``n_classes`` / ``n_outputs``)."""

    def _head_spec(self, spec: ModuleSpec, data: TrainingData) -> ModuleSpec:
        """The recipe the members are built from (a head may wrap the user's module)."""
        return spec

    @abstractmethod
    def _check_output(self, out: torch.Tensor, spec: ModuleSpec, data: TrainingData) -> None:
        """Check the module's output on the first training rows."""

    def _training_targets(self, data: TrainingData, rows: np.ndarray, split, warm: bool):
        """``(data, split)`` for training on ``rows``: a head whose encoding learns from
        ``y`` (a regressor's standardisation) learns it from the training rows alone, or
        keeps the fitted one in a warm refit, and puts a validation Dataset of the split's
        own in its units. The classifier's encoding is fixed by the labels (which a warm
        refit's fingerprint compares): nothing to do."""
        return data, split

    def _check_training_rows(self, data: TrainingData, rows: np.ndarray, split) -> None:
        """Checks of the training rows left by the validation split."""

    @abstractmethod
    def _summed_loss(self, stack, X, y, rows, working_memory=None, weights=None):
        """Each member's summed negative log-likelihood on ``X[rows]``, float64 of shape
        (n_members,) (``inf`` for a member with non-finite outputs)."""

    @abstractmethod
    def _set_targets(self, data: TrainingData) -> None:
        """Store the fitted target state (``classes_``, or the scaling of ``y``)."""

    def _head_settings(self) -> dict:
        """Settings of the head the fitted members were trained under, which a warm refit
        must find unchanged (name -> value)."""
        return {}

    @abstractmethod
    def _target_key(self, data: TrainingData):
        """What a warm refit must find unchanged about the targets, beyond ``y``."""

    def _member_losses(self, stack, data: TrainingData, working_memory=None) -> torch.Tensor:
        """Each member's mean loss on up to ``LOSS_ROWS`` training rows, shape (n_members,)."""
        rows = data.rows[:LOSS_ROWS]
        return self._summed_loss(stack, data.X, data.y, rows, working_memory) / len(rows)

    def _in_criterion_units(self, loss: float, data: TrainingData) -> float:
        """A mean per-row loss of :meth:`_summed_loss` in the units of the training
        criterion, which the divergence check compares it with (the same by default)."""
        return loss

    def _untrained_loss(self, template: nn.Module, data: TrainingData) -> float:
        """The loss of the freshly built module on the rows :meth:`_member_losses` uses
        (one member, evaluated as it is: no vectorised attempt to warn about)."""
        stack = ParameterStack.from_members(template, [module_tensors(template)])
        stack.prefer_loop()
        return float(self._member_losses(stack, data)[0])

    # -- prediction ---------------------------------------------------------------------------

    def _output_batches(self, X):
        """Check ``X`` and iterate over the members' raw outputs, batch by batch.

        Each item has shape ``(n_members, n_rows_in_batch, width)``. Rows per batch:
        ``iterator_valid__batch_size`` when set (``-1``: all rows at once), else as many as
        ``working_memory`` allows for all members together, measured on every call by one
        forward pass of the module on two rows (:func:`batch_size_for`); the training
        ``batch_size`` plays no part. Batching does not change the results.
        """
        X = self._prediction_input(X)
        size = self._routed("iterator_valid").get("batch_size")
        step = batch_size_for(self.members_, X, size, self.working_memory)
        return (self._member_outputs(X[rows]) for rows in batch_slices(len(X), step))

    def _prediction_input(self, X):
        """``X`` checked against the fitted inputs: a float32 array, or
        :class:`~simplexens.backends.rows.DatasetRows` for a Dataset or sparse matrix."""
        check_is_fitted(self)
        if is_row_source(X):
            X = prediction_rows(X, self.input_shape_, type(self).__name__)
        else:
            X = validate_data(self, X, reset=False, dtype=np.float32, allow_nd=True)
        if X.shape[1:] != self.input_shape_:
            raise ValueError(
                f"X has rows of shape {X.shape[1:]}, but {type(self).__name__} was fitted on "
                f"rows of shape {self.input_shape_}."
            )
        return X

    def _member_outputs(self, X: np.ndarray) -> torch.Tensor:
        out = self.members_.forward(torch.tensor(X, device=self.members_.device))
        if not bool(torch.isfinite(out).all()):
            raise ValueError(
                "the members' outputs on X are not finite (NaN or inf); are X's values far "
                "outside the range of the training data?"
            )
        return out


def _is_routed(name: str) -> bool:
    return name.startswith(ROUTED_PREFIXES) or name in SKORCH_PASSTHROUGH


def store_parameters(estimator: BaseEnsemble, arguments: dict) -> None:
    """Store an ``__init__``'s arguments (its ``locals()``) as attributes, and nothing else.

    The named parameters keep their names; the ``**kwargs`` (routed ``module__*``-style
    parameters) are stored under their own names, as skorch does.
    """
    named = {k: v for k, v in arguments.items() if k not in ("self", "kwargs", "__class__")}
    vars(estimator).update(named)
    vars(estimator).update(arguments.get("kwargs", {}))


def _check_device(device) -> None:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a torch device: {exc}") from exc
    if device.type not in COMPUTE_DEVICES:
        raise ValueError(
            f"device={str(device)!r} cannot train a network; use one of "
            f"{', '.join(COMPUTE_DEVICES)} (with an index for cuda, e.g. 'cuda:0')."
        )
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} was requested but CUDA is not available.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device='mps' was requested but MPS is not available.")


def _module_output(module: nn.Module, X: np.ndarray, spec: ModuleSpec, device) -> torch.Tensor:
    """The module's output on a few rows, in eval mode; a clear error if it fails."""
    batch = torch.tensor(X, device=device)
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            return module(batch)
    except Exception as exc:
        raise ValueError(
            f"the module failed on an input batch of shape {tuple(batch.shape)}"
            f"{filled_hint(spec, batch.ndim)}: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        module.train(was_training)


def filled_hint(spec: ModuleSpec, ndim: int) -> str:
    """For N-d input, which constructor arguments were filled from the data, and how."""
    filled = {k: spec.kwargs[k] for k in spec.filled if k in spec.kwargs}
    if not filled or ndim <= 2:
        return ""
    values = ", ".join(f"{k}={v}" for k, v in filled.items())
    return (
        f" (filled from the data: {values}; n_features_in is X.shape[1], which for N-d input "
        "is the size of the second axis only; set module__n_features_in to override)"
    )


def _batchnorm_loader(step: int, drop: bool, n_rows: int) -> dict:
    """Loader settings for a module with BatchNorm: no training batch of a single row."""
    if min(step, n_rows) < 2:
        raise ValueError(
            f"the module has BatchNorm layers, which need at least 2 rows per training "
            f"batch; got batches of {min(step, n_rows)} row (batch_size={step}, "
            f"{n_rows} training rows)."
        )
    return {"iterator_train__drop_last": True} if n_rows % step == 1 and not drop else {}


def loss_batches(stack: ParameterStack, X, y, rows: np.ndarray, working_memory=None, weights=None):
    """``(inputs, targets, weights)`` of ``X[rows]`` on the stack's device, in batches that
    keep all members' work within ``working_memory`` (as prediction does); ``weights`` is
    None when not given. The loop of every head's summed loss."""
    step = batch_size_for(stack, _Probe(X, rows), None, working_memory)
    for part in batch_slices(len(rows), step):
        picked = rows[part]
        inputs = torch.tensor(X[picked], device=stack.device)
        targets = torch.tensor(y[picked], device=stack.device)
        row_weights = (
            None if weights is None else torch.tensor(weights[picked], device=stack.device)
        )
        yield inputs, targets, row_weights


def summed_terms(terms: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Per-row loss terms ``(n_members, n_rows)`` summed over the rows, each times its
    weight: a NaN term counts as ``+inf`` (a member with non-finite outputs gets an infinite
    loss), and a row of weight 0 adds 0 whatever its term."""
    terms = terms.nan_to_num(nan=math.inf, posinf=math.inf, neginf=-math.inf)
    if weights is not None:
        terms = torch.where(weights > 0, terms * weights, torch.zeros_like(terms))
    return terms.sum(dim=1)


class _Probe:
    """``X[rows]`` as far as :func:`batch_size_for` reads it (its length and first rows),
    without reading every row of a Dataset."""

    def __init__(self, X, rows: np.ndarray):
        self.X, self.rows = X, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index) -> np.ndarray:
        return self.X[self.rows[index]]
