"""Trained networks to start from (``init_modes``), checked against the module to train.

Every estimator accepts ``init_modes``: networks already trained, used as its modes instead
of training new ones. :func:`resolve_init_modes` turns what the user passed (a fitted
estimator, modules, state dicts) into one dict of tensors per mode, named, shaped and typed
exactly as the module the estimator builds, and refuses anything else with a message that
says which network and which tensor is wrong.
"""

from __future__ import annotations

import difflib
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from sklearn.exceptions import NotFittedError
from torch import nn
from torch.nn.parameter import UninitializedTensorMixin

from .backends.functional import module_tensors

#: What ``init_modes`` may be, for the error messages.
ACCEPTED = (
    "a fitted simplexens estimator, a trained nn.Module, a state dict (a mapping of names to "
    "tensors, e.g. module.state_dict()), or a list of nn.Modules and state dicts"
)

#: Names listed in a message about missing or unexpected names; the rest are counted.
MAX_NAMES = 5


@dataclass(frozen=True)
class _Reference:
    """What the module to train expects of each mode.

    Attributes
    ----------
    tensors : dict of str to Tensor
        The module's parameters and buffers (:func:`module_tensors`), in its order.
    optional : frozenset of str
        Non-persistent buffers: ``state_dict()`` leaves them out, the module's values fill in.
    ignored : frozenset of str
        Keys of the module's own state dict that are no tensor of their own: second names of
        shared (tied) parameters, ``_extra_state`` entries.
    """

    tensors: dict
    optional: frozenset
    ignored: frozenset

    @classmethod
    def of(cls, template: nn.Module) -> _Reference:
        tensors = module_tensors(template)
        saved = set(template.state_dict(keep_vars=True))
        return cls(tensors, frozenset(set(tensors) - saved), frozenset(saved - set(tensors)))


def resolve_init_modes(
    init_modes, template: nn.Module, *, expected: int | None, count_name: str, owner: str
) -> list[dict[str, torch.Tensor]]:
    """Check the networks to start from and copy their tensors.

    Parameters
    ----------
    init_modes : estimator, nn.Module, mapping, or list or tuple of nn.Module and mapping
        The trained networks, one of:

        - a fitted simplexens estimator (an object with ``_init_mode_tensors()``), whose
          modes are taken;
        - a list or tuple (or an ``nn.ModuleList``) of modules and state dicts, in any mix.
          A module needs the template's parameter and buffer names and shapes, not its
          class. A state dict maps names to tensors, as ``module.state_dict()`` returns;
        - a single module or a single state dict, taken as a list of one network.

        None (train from scratch) is the caller's to handle; it is refused here.
    template : nn.Module
        The module the estimator trains; its :func:`module_tensors` are the names, shapes and
        dtypes each network must have.
    expected : int or None
        The number of networks the estimator wants, or None to accept any number.
    count_name : str
        The estimator's parameter that sets that number (``"n_modes"``), for the messages.
    owner : str
        The estimator's class name, for the messages.

    Returns
    -------
    list of dict of str to Tensor
        One dict per network with exactly the names of ``module_tensors(template)``, in its
        order: fresh contiguous CPU tensors in the template's dtypes, never aliasing the
        inputs, which are left unchanged. Non-persistent buffers a state dict lacks are
        copies of the template's.

    Raises
    ------
    TypeError
        ``init_modes`` or one of its networks is of another type; a value of a state dict is
        not a tensor; a tensor's dtype cannot be converted (bool or complex to real numbers).
    ValueError
        The estimator is unfitted; there are no networks or not ``expected`` of them; names
        are missing or unexpected (the message suggests close names and points out a prefix
        such as ``"module."`` that, removed or added, would make them match; it is never
        removed silently); a shape differs; a floating tensor has NaN or infinite values; an
        integer buffer gets values its dtype cannot hold exactly.

    Notes
    -----
    Keys of the template's own state dict that are not among its tensors (second names of
    tied parameters, ``_extra_state``) are accepted and ignored.
    """
    sources = _sources(init_modes)
    if not sources:
        raise ValueError(
            "init_modes holds no network; pass at least one trained network, or leave "
            "init_modes=None to train from scratch."
        )
    _check_count(len(sources), expected, count_name, owner)
    reference = _Reference.of(template)
    return [_resolve_one(label, source, reference) for label, source in sources]


# -- the accepted forms ----------------------------------------------------------------------


def _sources(init_modes) -> list[tuple[str, Mapping]]:
    """Turn ``init_modes`` into (label for messages, mapping of names to values) pairs."""
    if isinstance(init_modes, type):
        raise TypeError(f"init_modes must be {ACCEPTED}; got {_describe(init_modes)}.")
    if hasattr(init_modes, "_init_mode_tensors"):
        return _estimator_sources(init_modes)
    if isinstance(init_modes, nn.ModuleList):
        init_modes = list(init_modes)
    if isinstance(init_modes, nn.Module | Mapping):
        _refuse_mapping_of_networks(init_modes)
        return [("init_modes", _as_mapping("init_modes", init_modes))]
    if isinstance(init_modes, list | tuple):
        return [_element_source(i, item) for i, item in enumerate(init_modes)]
    raise TypeError(
        f"init_modes must be {ACCEPTED}; got {_describe(init_modes)}.{_hint(init_modes)}"
    )


def _estimator_sources(estimator) -> list[tuple[str, Mapping]]:
    name = type(estimator).__name__
    try:
        modes = estimator._init_mode_tensors()
    except NotFittedError as error:
        raise ValueError(
            f"init_modes is an unfitted estimator ({name}); fit it first, then pass it as "
            "init_modes, or pass trained networks."
        ) from error
    return [(f"mode {i} of init_modes ({name})", mode) for i, mode in enumerate(modes)]


def _element_source(index: int, item) -> tuple[str, Mapping]:
    label = f"init_modes[{index}]"
    if isinstance(item, nn.Module | Mapping):
        return label, _as_mapping(label, item)
    hint = _hint(item)
    if hasattr(item, "_init_mode_tensors"):
        hint = " Pass a fitted estimator as init_modes itself, not inside a list."
    raise TypeError(
        f"{label} must be an nn.Module or a state dict (a mapping of names to tensors); got "
        f"{_describe(item)}.{hint}"
    )


def _as_mapping(label: str, item) -> Mapping:
    """A state dict as it is; a module's parameters and buffers (detached, not copied)."""
    if not isinstance(item, nn.Module):
        return item
    lazy = [n for n, t in _named_tensors(item) if isinstance(t, UninitializedTensorMixin)]
    if lazy:
        raise ValueError(
            f"{label} has uninitialised (lazy) parameters such as {lazy[0]!r}; run it on a "
            "batch, or train it, before passing it."
        )
    return module_tensors(item)


def _named_tensors(module: nn.Module):
    yield from module.named_parameters()
    yield from module.named_buffers()


def _refuse_mapping_of_networks(init_modes) -> None:
    """A dict of networks ({"a": net_a, "b": net_b}) is not a state dict: say so."""
    if not isinstance(init_modes, Mapping) or not init_modes:
        return
    if all(isinstance(v, nn.Module | Mapping) for v in init_modes.values()):
        key = next(iter(init_modes))
        raise TypeError(
            f"init_modes is a mapping of networks ({key!r} holds "
            f"{_describe(init_modes[key])}), not a state dict; pass the networks as a list, "
            "e.g. list(init_modes.values())."
        )


def _check_count(n: int, expected: int | None, count_name: str, owner: str) -> None:
    if expected is None or n == expected:
        return
    networks = "network" if n == 1 else "networks"
    if not count_name.isidentifier():  # a count fixed by the method (FGE: 1; a curve: 2)
        raise ValueError(
            f"init_modes has {n} {networks} but {owner} starts from exactly {expected}: "
            f"{count_name}; pass {expected}."
        )
    raise ValueError(
        f"init_modes has {n} {networks} but {count_name}={expected} in {owner}; set "
        f"{count_name}={n} to start from all of them, or pass {expected}."
    )


def _describe(value) -> str:
    """Name what the user gave: its type, and its value when short."""
    if isinstance(value, type):
        return f"the class {value.__module__}.{value.__qualname__}, not an instance"
    kind = type(value)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    if isinstance(value, str | bytes | numbers.Number) and len(repr(value)) <= 60:
        return f"{name} {value!r}"
    if isinstance(value, list | tuple) and not value:
        return f"an empty {name}"
    return name


def _hint(value) -> str:
    """Advice for a few likely mistakes: a path, a skorch net."""
    if isinstance(value, str | os.PathLike):
        return " To start from saved weights, load them first: init_modes=torch.load(path)."
    if isinstance(getattr(value, "module_", None), nn.Module):
        return " For a fitted skorch net, pass its trained module, net.module_."
    return ""


# -- checks of one network -------------------------------------------------------------------


def _resolve_one(label: str, source: Mapping, reference: _Reference) -> dict[str, torch.Tensor]:
    _check_names(label, source, reference)
    resolved = {}
    for name, like in reference.tensors.items():
        if name in source:
            resolved[name] = _checked_tensor(f"tensor {name!r} of {label}", source[name], like)
        else:  # a non-persistent buffer: the module's own value
            resolved[name] = like.to("cpu", copy=True, memory_format=torch.contiguous_format)
    return resolved


def _check_names(label: str, source: Mapping, reference: _Reference) -> None:
    given = set(source)
    missing = [n for n in reference.tensors if n not in given and n not in reference.optional]
    known = set(reference.tensors) | reference.ignored
    unexpected = [k for k in source if k not in known]
    if not missing and not unexpected:
        return
    advice = _prefix_advice(label, given, reference)
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({_listing(missing, [])})")
    if unexpected:
        candidates = [] if advice else [n for n in missing if isinstance(n, str)]
        parts.append(f"{len(unexpected)} unexpected ({_listing(unexpected, candidates)})")
    raise ValueError(
        f"{label} does not match the module's parameter and buffer names: "
        f"{'; '.join(parts)}.{advice}"
    )


def _listing(names: list, candidates: list) -> str:
    """The first few names, each with its closest candidate when one is close."""
    shown = []
    for name in names[:MAX_NAMES]:
        close = difflib.get_close_matches(name, candidates, n=1) if isinstance(name, str) else []
        shown.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    more = len(names) - MAX_NAMES
    return ", ".join(shown) + (f", and {more} more" if more > 0 else "")


def _prefix_advice(label: str, given: set, reference: _Reference) -> str:
    """Point out a prefix that, removed from or added to every name, makes the names match."""
    if not given or not all(isinstance(k, str) for k in given):
        return ""
    required = set(reference.tensors) - reference.optional
    known = set(reference.tensors) | reference.ignored

    def matches(names: set) -> bool:
        return required <= names <= known

    for prefix in _dotted_prefixes(next(iter(given))):
        stripped = {k[len(prefix) :] for k in given if k.startswith(prefix)}
        if len(stripped) == len(given) and matches(stripped):
            return (
                f" Every name in {label} starts with {prefix!r} (saved from a wrapper such "
                "as DataParallel or torch.compile?); without that prefix the names match, "
                "but it is not removed silently: pass the wrapped module, or "
                f"{{k.removeprefix({prefix!r}): v for k, v in state_dict.items()}}."
            )
    first_required = next((n for n in reference.tensors if n in required), "")
    for prefix in _dotted_prefixes(first_required):
        if matches({prefix + k for k in given}):
            return (
                f" The module's names start with {prefix!r} where those of {label} do not "
                "(saved from a part of the module?); with that prefix added they match: "
                f"{{{prefix!r} + k: v for k, v in state_dict.items()}}."
            )
    return ""


def _dotted_prefixes(name: str) -> list[str]:
    """``"a.b.c"`` -> ``["a.", "a.b."]``."""
    return [name[: i + 1] for i, char in enumerate(name) if char == "."]


def _checked_tensor(where: str, value, like: torch.Tensor) -> torch.Tensor:
    """A fresh, contiguous CPU copy of ``value`` in ``like``'s dtype, after checking it."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{where} is {_describe(value)}, not a torch.Tensor.")
    if isinstance(value, UninitializedTensorMixin):
        raise ValueError(f"{where} is uninitialised (a lazy module's parameter).")
    if value.is_meta or value.layout != torch.strided:
        kind = "meta" if value.is_meta else str(value.layout)
        raise ValueError(f"{where} is a {kind} tensor; a dense tensor with values is needed.")
    if value.shape != like.shape:
        raise ValueError(
            f"{where} has shape {tuple(value.shape)} but the module's has shape "
            f"{tuple(like.shape)}."
        )
    _check_finite(where, value, "")
    copy = _cast_copy(where, value.detach(), like.dtype)
    _check_finite(where, copy, f" after conversion to {like.dtype} (values too large for it)")
    return copy


def _check_finite(where: str, tensor: torch.Tensor, context: str) -> None:
    if not (tensor.is_floating_point() or tensor.is_complex()):
        return
    bad = int((~torch.isfinite(tensor)).sum())
    if bad:
        raise ValueError(
            f"{where} has {bad} NaN or infinite value(s) of {tensor.numel()}{context}; "
            "was the network's training diverging?"
        )


def _cast_copy(where: str, value: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Copy to the CPU in ``dtype``; to a non-floating dtype only when values are kept exactly."""
    from_bool = value.dtype == torch.bool and dtype != torch.bool
    from_complex = value.is_complex() and not dtype.is_complex
    if from_bool or from_complex:
        raise TypeError(f"{where} has dtype {value.dtype}; the module's has dtype {dtype}.")
    copy = value.to("cpu", dtype, copy=True, memory_format=torch.contiguous_format)
    if dtype.is_floating_point or dtype.is_complex or value.dtype == dtype:
        return copy
    if not torch.equal(copy.to(value.dtype), value.cpu()):
        raise ValueError(
            f"{where} has dtype {value.dtype} and values that {dtype}, the module's dtype, "
            "cannot hold exactly (fractions, NaN, or out of range)."
        )
    return copy
