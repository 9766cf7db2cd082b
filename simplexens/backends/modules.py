"""Building a fresh copy of the user's module for each member.

The user may pass an ``nn.Module`` subclass, any callable returning a module, or a module
instance. A class or factory is called with the ``module__*`` arguments; an instance is
deep-copied and re-initialised, because skorch would otherwise start every member from the
same weights.
"""

from __future__ import annotations

import copy
import functools
import inspect
import warnings
from dataclasses import dataclass, field
from typing import Any

from torch import nn

#: Constructor arguments filled from the data when the module accepts them and the user did
#: not set them.
DATA_ARGUMENTS = ("n_features_in", "n_classes", "n_outputs")


def _accepted_arguments(factory: Any) -> set[str]:
    """Keyword arguments ``factory`` accepts and nobody has set (a partial's are set)."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return set()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    bound = set(factory.keywords) if isinstance(factory, functools.partial) else set()
    return {name for name, p in parameters.items() if p.kind in kinds} - bound


def reinitialise(module: nn.Module) -> None:
    """Re-draw a module's parameters by calling every submodule's ``reset_parameters``.

    Parameters that no ``reset_parameters`` covers keep their values; a warning names them,
    since members built from such an instance would share them.
    """
    covered = set()
    for sub in module.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()
            covered.update(id(p) for p in sub.parameters())
    missed = [name for name, p in module.named_parameters() if id(p) not in covered]
    if missed:
        warnings.warn(
            f"module instance has parameters that no reset_parameters() re-initialises "
            f"({', '.join(missed[:5])}{', ...' if len(missed) > 5 else ''}); every member "
            "starts from the same values for them. Pass the module class or a factory instead.",
            UserWarning,
            stacklevel=4,
        )


@dataclass
class ModuleSpec:
    """A recipe for fresh modules: a class or factory with its arguments, or an instance.

    Parameters
    ----------
    module : type, callable or nn.Module
        What the user passed as ``module``.
    kwargs : dict
        Constructor arguments (the ``module__*`` parameters, plus the data arguments filled in
        by :meth:`resolve`).
    filled : tuple of str, default=()
        The names in ``kwargs`` that :meth:`resolve` filled from the data.
    wrap : callable or None, default=None
        Applied to every built module (e.g. a regressor's learned-noise wrapper
        :class:`~simplexens.backends.likelihoods.Homoscedastic`); picklable.
    """

    module: Any
    kwargs: dict = field(default_factory=dict)
    filled: tuple = ()
    wrap: Any = None

    @classmethod
    def resolve(
        cls, module: Any, kwargs: dict, *, n_features_in: int, n_classes: int
    ) -> ModuleSpec:
        """Check ``module`` and fill ``n_features_in`` / ``n_classes`` where it accepts them.

        ``n_classes`` is the module's output width (a regressor's columns per target times
        the targets); a constructor argument named ``n_outputs`` gets the same value.

        Raises
        ------
        TypeError
            If ``module`` is neither an ``nn.Module`` instance nor callable.
        ValueError
            If ``module__*`` arguments are given for a module instance.
        """
        if isinstance(module, nn.Module):
            if kwargs:
                raise ValueError(
                    f"module__* parameters ({', '.join(sorted(kwargs))}) cannot be applied to "
                    f"a module instance ({type(module).__name__}); pass the class instead."
                )
            return cls(module, {})
        if not callable(module):
            raise TypeError(
                "module must be an nn.Module subclass, a callable returning an nn.Module, or "
                f"an nn.Module instance; got {module!r}."
            )
        accepted = _accepted_arguments(module)
        data = {"n_features_in": n_features_in, "n_classes": n_classes, "n_outputs": n_classes}
        filled = tuple(n for n in DATA_ARGUMENTS if n in accepted and n not in kwargs)
        return cls(module, {**kwargs, **{n: data[n] for n in filled}}, filled)

    def build(self) -> nn.Module:
        """Return a new module, drawing its initial weights from torch's global generator."""
        built = self._build()
        return built if self.wrap is None else self.wrap(built)

    def _build(self) -> nn.Module:
        if isinstance(self.module, nn.Module):
            fresh = copy.deepcopy(self.module)
            reinitialise(fresh)
            return fresh
        name = getattr(self.module, "__name__", repr(self.module))
        try:
            built = self.module(**self.kwargs)
        except TypeError as exc:
            raise TypeError(f"could not build module {name}({self._arguments()}): {exc}") from exc
        if not isinstance(built, nn.Module):
            kind = type(built).__name__
            raise TypeError(f"module factory {name} returned {kind}, not an nn.Module.")
        return built

    def _arguments(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
