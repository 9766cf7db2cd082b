"""The classifier head: labels, logits, and the average of the members' softmax.

:class:`ClassifierHead` is what a simplexens classifier adds to its method (a subclass of
:class:`~simplexens._base.BaseEnsemble`): label checks and encoding, the module's output
width (one logit per class), the cross-entropy that judges divergence, and prediction as the
Bayesian model average of the members' softmax probabilities.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.base import ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, column_or_1d

from ._base import filled_hint, loss_batches, summed_terms
from ._inputs import CHECK_ROWS
from .backends.functional import ParameterStack


class ClassifierHead(ClassifierMixin):
    """The classifier side of an estimator; combine as ``class X(ClassifierHead, Method)``."""

    _head = "classifier"

    def _criterion(self):
        return self.criterion

    def _check_targets(self, y) -> None:
        check_classification_targets(y)
        classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes; the data contain "
                f"only one class: {classes[0]}."
            )

    def _encode_targets(self, y, weights) -> dict:
        encoder = LabelEncoder().fit(y)
        return {"y": encoder.transform(y).astype(np.int64), "classes": encoder.classes_}

    def _output_width(self, data) -> int:
        return len(data.classes)

    def _check_output(self, out, spec, data) -> None:
        """The module must return one logit per class, not probabilities."""
        n_rows, n_classes = min(len(data.X), CHECK_ROWS), len(data.classes)
        if not isinstance(out, torch.Tensor) or out.shape != (n_rows, n_classes):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"the module must return logits of shape (n_samples, n_classes) = "
                f"({n_rows}, {n_classes}) for the {n_classes} classes in y, but returned "
                f"{shape}; give its last layer n_classes outputs (a constructor argument "
                f"named n_classes or n_outputs is filled from the data)"
                f"{filled_hint(spec, data.X[:1].ndim)}."
            )
        _warn_if_probabilities(out)

    def _check_training_rows(self, data, rows, split) -> None:
        """Every class must keep training rows after the validation split."""
        missing = np.setdiff1d(np.arange(len(data.classes)), data.y[rows])
        if len(missing):
            raise ValueError(
                f"train_split={split.source!r} left no training rows of class(es) "
                f"{', '.join(map(str, data.classes[missing]))}; use a stratified split (e.g. "
                "ValidSplit(0.2, stratified=True)) or a smaller validation part."
            )

    def _summed_loss(self, stack, X, y, rows, working_memory=None, weights=None):
        return summed_nll(stack, X, y, rows, working_memory, weights)

    def _set_targets(self, data) -> None:
        self.classes_ = data.classes

    def _target_key(self, data):
        return data.classes

    # -- SPRO's dimension probe ----------------------------------------------------------

    _probe_score_name = "accuracy"

    def _probe_targets(self, X, y) -> np.ndarray:
        """``y`` checked: one label per row of ``X``, each among ``classes_``."""
        y = column_or_1d(y)
        check_consistent_length(X, y)
        unknown = np.setdiff1d(y, self.classes_)
        if len(unknown):
            raise ValueError(
                f"y has labels not seen in fit: {unknown[:5].tolist()}; classes_ are "
                f"{self.classes_.tolist()}."
            )
        return y

    def _points_score(self, outputs: torch.Tensor, y: np.ndarray) -> float:
        """Mean accuracy of each parameter set's logits ``(n_points, n_samples, n_classes)``."""
        predicted = self.classes_[outputs.argmax(-1).cpu().numpy()]
        return float((predicted == np.asarray(y)[None]).mean())

    # -- predict ----------------------------------------------------------------------------

    def _member_log_proba_batches(self, X):
        """The members' float64 log-probabilities, batch by batch: each item of shape
        ``(n_members, n_rows_in_batch, n_classes)`` (batches as in ``_output_batches``)."""
        return (out.to(torch.float64).log_softmax(dim=-1) for out in self._output_batches(X))

    def predict_member_proba(self, X):
        """Class probabilities of every member.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...), sparse matrix, or torch Dataset
            Inputs of the training inputs' shape.

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
        X : array-like of shape (n_samples, ...), sparse matrix, or torch Dataset
            Inputs of the training inputs' shape.

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            ``(1/M) sum_m softmax(f_m(x))`` over the ``M`` members, columns in the order of
            ``classes_``.
        """
        parts = [lp.exp().mean(dim=0).cpu().numpy() for lp in self._member_log_proba_batches(X)]
        return np.concatenate(parts, axis=0)

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`, computed stably (logsumexp over members).

        Parameters
        ----------
        X : array-like of shape (n_samples, ...), sparse matrix, or torch Dataset
            Inputs of the training inputs' shape.

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            ``log((1/M) sum_m softmax(f_m(x)))``, columns in the order of ``classes_``.
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
        X : array-like of shape (n_samples, ...), sparse matrix, or torch Dataset
            Inputs of the training inputs' shape.

        Returns
        -------
        ndarray of shape (n_samples,)
            The label of ``classes_`` with the highest averaged probability.
        """
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]


def _warn_if_probabilities(out: torch.Tensor) -> None:
    """Warn when every row is non-negative and sums to one: softmax applied twice otherwise."""
    out = out.detach().to(torch.float64)
    sums = out.sum(dim=1)
    if bool((out >= 0).all()) and bool(((sums - 1).abs() < 1e-4).all()):
        warnings.warn(
            "the module's outputs look like probabilities (non-negative rows summing to 1); "
            "the loss and the predictions apply softmax themselves, so return logits: remove "
            "the final softmax layer.",
            UserWarning,
            stacklevel=5,
        )


def summed_nll(stack: ParameterStack, X, y, rows: np.ndarray, working_memory=None, weights=None):
    """Each member's summed cross-entropy on ``X[rows]``, float64 of shape (n_members,).

    In batches that keep all members' work within ``working_memory``, as prediction does;
    each row's term weighted by ``weights[row]`` when given. A member with non-finite outputs
    gets ``inf``.
    """
    total = torch.zeros(stack.n_members, dtype=torch.float64, device=stack.device)
    for inputs, labels, row_weights in loss_batches(stack, X, y, rows, working_memory, weights):
        log_proba = stack.forward(inputs).to(torch.float64).log_softmax(dim=-1)
        total += summed_terms(-log_proba[:, torch.arange(len(labels)), labels], row_weights)
    return total
