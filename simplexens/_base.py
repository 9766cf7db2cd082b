"""Shared scikit-learn plumbing of the four estimators.

:class:`BaseEnsembleClassifier` owns everything that is not a method's own training: skorch
parameters and their routing, input validation, label encoding, seeds, the module recipe, the
:class:`~simplexens.backends.functional.ParameterStack` of members, and prediction as the
Bayesian model average of the members' softmax probabilities.
"""

from __future__ import annotations

import numbers
from abc import abstractmethod
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state, check_scalar
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from .backends.batchnorm import recalibrate_batchnorm
from .backends.functional import ParameterStack
from .backends.modules import ModuleSpec
from .backends.parallel import private_rng

#: Prefixes of the parameters routed to skorch, exactly as skorch names them.
ROUTED_PREFIXES = (
    "module__",
    "optimizer__",
    "criterion__",
    "iterator_train__",
    "iterator_valid__",
    "callbacks__",
)

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
)


@dataclass
class FitResult:
    """What a method's training hands back to :meth:`BaseEnsembleClassifier.fit`.

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
    """

    members: list
    epochs_spent: int
    attributes: dict = field(default_factory=dict)
    recalibrate: bool = False


@dataclass
class TrainingData:
    """Validated training data and what was learnt about it."""

    X: np.ndarray
    y: np.ndarray
    classes: np.ndarray


class BaseEnsembleClassifier(ClassifierMixin, BaseEstimator):
    """Base of the simplexens classifiers; not for direct use.

    Subclasses list every parameter in their ``__init__`` (scikit-learn reads the signature)
    and store them with :func:`store_parameters`, check their own parameters in
    :meth:`_check_method_params` and train in :meth:`_fit_members`.
    """

    # -- parameters ------------------------------------------------------------------------

    def get_params(self, deep=True):
        """Get parameters, including the routed ``module__*``-style ones."""
        params = super().get_params(deep=deep)
        params.update(self._routed())
        return params

    def set_params(self, **params):
        """Set parameters, including the routed ``module__*``-style ones."""
        routed = {k: v for k, v in params.items() if k.startswith(ROUTED_PREFIXES)}
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

    def _net_kwargs(self) -> dict:
        """Arguments of each member's skorch net, ``module`` and ``module__*`` excluded."""
        kwargs = {name: getattr(self, name) for name in NET_PARAMETERS}
        kwargs.update({k: v for k, v in self._routed().items() if not k.startswith("module__")})
        return kwargs

    def _check_params(self) -> None:
        _check_routed_names(self._routed())
        check_scalar(self.lr, "lr", numbers.Real, min_val=0, include_boundaries="neither")
        check_scalar(self.max_epochs, "max_epochs", numbers.Integral, min_val=1)
        sizes = {"batch_size": self.batch_size}
        for route in ("iterator_train", "iterator_valid"):
            if "batch_size" in self._routed(route):
                sizes[f"{route}__batch_size"] = self._routed(route)["batch_size"]
        for name, size in sizes.items():
            if size != -1:
                check_scalar(size, name, numbers.Integral, min_val=1)
        for name in ("criterion", "optimizer"):
            if not callable(getattr(self, name)):
                raise TypeError(
                    f"{name} must be a class or callable, got {getattr(self, name)!r}."
                )
        if self.train_split is not None and not callable(self.train_split):
            raise TypeError(
                f"train_split must be None or a callable such as skorch's ValidSplit, got "
                f"{self.train_split!r}."
            )
        _check_device(self.device)
        self._check_method_params()

    @abstractmethod
    def _check_method_params(self) -> None:
        """Check the method's own parameters; raise with a clear message."""

    # -- fit --------------------------------------------------------------------------------

    def fit(self, X, y):
        """Train the ensemble.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, ...)
            Training inputs: numpy arrays, pandas frames, lists; N-dimensional inputs such as
            images ``(n, C, H, W)`` are passed to the module as they are. Cast to float32.
        y : array-like of shape (n_samples,)
            Labels of any type; ``predict`` returns them as given.

        Returns
        -------
        self
        """
        self._forget_fit()
        try:
            self._check_params()
            data = self._validate_training_data(X, y)
            spec, template = self._module_recipe(data)
            rng = check_random_state(self.random_state)
            result = self._fit_members(spec, data, rng)
            stack = ParameterStack.from_members(template, result.members, self.device)
            if result.recalibrate:
                recalibrate_batchnorm(stack, self._batches(data.X, stack.device))
        except BaseException:
            self._forget_fit()
            raise
        self.classes_ = data.classes
        self.module_spec_ = spec
        self.members_ = stack
        self.n_members_ = stack.n_members
        self.epochs_spent_ = int(result.epochs_spent)
        vars(self).update(result.attributes)
        return self

    @abstractmethod
    def _fit_members(
        self, spec: ModuleSpec, data: TrainingData, rng: np.random.RandomState
    ) -> FitResult:
        """Train the method's members."""

    def _batches(self, X: np.ndarray, device):
        """``X`` in consecutive training batches, as tensors on ``device``.

        Batches as the training loader makes them (``iterator_train__batch_size`` or
        ``batch_size``; the remainder dropped with ``iterator_train__drop_last=True``), in order.
        """
        loader = self._routed("iterator_train")
        step = loader.get("batch_size", self.batch_size)
        step = len(X) if step == -1 else step
        stop = len(X) - len(X) % step if loader.get("drop_last", False) else len(X)
        return (torch.tensor(X[i : i + step], device=device) for i in range(0, stop, step))

    def _forget_fit(self) -> None:
        params = self.get_params(deep=False)
        for name in [k for k in vars(self) if k.endswith("_") and k not in params]:
            delattr(self, name)

    def _validate_training_data(self, X, y) -> TrainingData:
        X, y = validate_data(
            self, X, y, dtype=np.float32, allow_nd=True, ensure_min_samples=1, y_numeric=False
        )
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        if len(encoder.classes_) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes; the data contain "
                f"only one class: {encoder.classes_[0]}."
            )
        y_encoded = encoder.transform(y).astype(np.int64)
        # Read-only inputs (memory maps, pandas' copy-on-write arrays) are copied once, since
        # torch cannot wrap them; the caller's arrays are never written to.
        return TrainingData(np.require(X, requirements="W"), y_encoded, encoder.classes_)

    def _module_recipe(self, data: TrainingData) -> tuple[ModuleSpec, nn.Module]:
        """Resolve the module recipe and check the module against the data.

        Returns the recipe and one module built from it on ``device``, the template of the
        member stack.
        """
        spec = ModuleSpec.resolve(
            self.module,
            self._routed("module"),
            n_features_in=data.X.shape[1],
            n_classes=len(data.classes),
        )
        with private_rng(0, self.device):
            template = spec.build().to(self.device)
        _check_module_output(template, data.X[:2], len(data.classes), self.device)
        return spec, template

    # -- predict ----------------------------------------------------------------------------

    def _member_log_proba_batches(self, X):
        """Check ``X`` and iterate over the members' float64 log-probabilities, batch by batch.

        Each item has shape ``(n_members, n_rows_in_batch, n_classes)``.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float32, allow_nd=True)
        step = self._routed("iterator_valid").get("batch_size", self.batch_size)
        step = len(X) if step == -1 else step
        return (self._member_log_proba(X[i : i + step]) for i in range(0, len(X), step))

    def _member_log_proba(self, X: np.ndarray) -> torch.Tensor:
        logits = self.members_.forward(torch.tensor(X, device=self.members_.device))
        return logits.to(torch.float64).log_softmax(dim=-1)

    def predict_member_proba(self, X):
        """Class probabilities of every member.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)

        Returns
        -------
        ndarray of shape (n_members, n_samples, n_classes)
            Softmax probabilities, columns ordered as ``classes_``.
        """
        parts = [lp.exp().cpu().numpy() for lp in self._member_log_proba_batches(X)]
        return np.concatenate(parts, axis=1)

    def predict_proba(self, X):
        """Bayesian model average: the mean of the members' softmax probabilities.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        parts = [lp.exp().mean(dim=0).cpu().numpy() for lp in self._member_log_proba_batches(X)]
        return np.concatenate(parts, axis=0)

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`, computed stably (logsumexp over members).

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        parts = [
            (lp.logsumexp(dim=0) - np.log(lp.shape[0])).cpu().numpy()
            for lp in self._member_log_proba_batches(X)
        ]
        return np.concatenate(parts, axis=0)

    def predict(self, X):
        """Most probable class under :meth:`predict_proba`, as the original labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]


def store_parameters(estimator: BaseEnsembleClassifier, arguments: dict) -> None:
    """Store an ``__init__``'s arguments (its ``locals()``) as attributes, and nothing else.

    The named parameters keep their names; the ``**kwargs`` (routed ``module__*``-style
    parameters) are stored under their own names, as skorch does.
    """
    named = {k: v for k, v in arguments.items() if k not in ("self", "kwargs", "__class__")}
    vars(estimator).update(named)
    vars(estimator).update(arguments.get("kwargs", {}))


def _check_routed_names(kwargs: dict) -> None:
    unknown = [k for k in kwargs if not k.startswith(ROUTED_PREFIXES)]
    if unknown:
        raise TypeError(
            f"unexpected parameter(s) {', '.join(map(repr, unknown))}; extra parameters must "
            f"start with one of {', '.join(ROUTED_PREFIXES)}."
        )


def _check_device(device) -> None:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a torch device: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} was requested but CUDA is not available.")


def _check_module_output(module: nn.Module, X: np.ndarray, n_classes: int, device) -> None:
    """Run the module on two rows and check it returns one logit per class."""
    batch = torch.tensor(X, device=device)
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            out = module(batch)
    except Exception as exc:
        raise ValueError(
            f"the module failed on an input batch of shape {tuple(batch.shape)}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    finally:
        module.train(was_training)
    if not isinstance(out, torch.Tensor) or out.shape != (len(X), n_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"the module must return logits of shape (n_samples, n_classes) = "
            f"({len(X)}, {n_classes}) for the {n_classes} classes in y, but returned {shape}; "
            "give its last layer n_classes outputs (a constructor argument named n_classes is "
            "filled from the data)."
        )
