"""Docstring sections shared by the estimators, with the words of each head.

A classifier's docstring is written in full in its class; a regressor's is built from its
classifier's (:func:`regressor_doc`): the method's description and parameters are the same,
the head's sections (module output, criterion, weights, fitted attributes) differ.
"""

from __future__ import annotations

_MODULE = """\
module : nn.Module subclass, callable returning an nn.Module, or nn.Module instance
        The network. A class or factory is called once per member with the ``module__*``
        parameters; an instance is deep-copied and re-initialised (``reset_parameters``) per
        member. A constructor argument named ``n_features_in`` is filled with ``X.shape[1]``
        and one named ``n_classes`` or ``n_outputs`` with the output width (below), unless
        set through ``module__*``.
        """

MODULE_PARAMETER = {
    "classifier": _MODULE
    + """The module returns logits of shape
        ``(n_samples, n_classes)``.""",
    "regressor": _MODULE
    + """The module returns ``(n_samples, width)``: under
        ``likelihood="gaussian"`` the ``n_targets`` means then the ``n_targets`` raw
        scales (width ``2 * n_targets``); under ``"homoscedastic"`` and ``"mse"`` the
        means (width ``n_targets``).""",
}

LIKELIHOOD_PARAMETER = """\
likelihood : {"gaussian", "homoscedastic", "mse"}, default="gaussian"
        What each member predicts and trains on, per target. ``"gaussian"``: a mean and a
        standard deviation ``sigma = softplus(raw) + sigma_min`` for every input, trained with
        the Gaussian negative log-likelihood (Lakshminarayanan et al. 2017).
        ``"homoscedastic"``: a mean per input and one learned noise scale per target (a
        parameter appended to the module, :class:`~simplexens.backends.likelihoods.
        Homoscedastic`), same loss. ``"mse"``: a mean, trained with the squared error; the
        predictive variance is then the members' spread alone. ``sigma_min`` is
        ``criterion__min_scale`` (default 1e-3) in units of the standardised ``y``: a
        thousandth of each target's standard deviation (or the ``min_scale`` of a given
        criterion). ``"homoscedastic"`` members carry their noise scale: as ``init_modes``,
        networks of a homoscedastic regressor keep theirs, and networks of the module
        itself (modules, their state dicts, another regressor's modes) start from
        ``sigma = 1``, one standard deviation of ``y``. Where a
        method needs a likelihood of the parameters (SubspaceRegressor's posterior),
        ``"mse"`` counts as a Gaussian of unit variance in the standardised units."""

_CRITERION = {
    "classifier": """\
criterion : type, default=torch.nn.CrossEntropyLoss
        Loss on the module's logits, as in skorch.""",
    "regressor": """\
criterion : type or None, default=None
        Loss on the module's output, as in skorch. ``None``: the likelihood's,
        :class:`~simplexens.backends.likelihoods.GaussianNLLLoss` (``criterion__min_scale``)
        or, for ``"mse"``, :class:`~simplexens.backends.likelihoods.SquaredErrorLoss`.
        Prediction reads the outputs under ``likelihood`` whatever the criterion.""",
}

_WEIGHTS = {
    "classifier": """\
class_weight : dict, "balanced" or None, default=None
        Weights of the classes in the training loss of every phase, as in scikit-learn
        (``{label: weight}``; ``"balanced"``: ``n_samples / (n_classes * count)``); multiplied
        with ``fit``'s ``sample_weight``. Each batch's loss is then the weighted mean of its
        rows' losses, ``Σ w_i l_i / Σ w_i`` (the criterion is built with
        ``reduction="none"``). BatchNorm recalibration and the divergence check are
        unweighted.
    """,
    "regressor": "",
}

TRAINING_PARAMETERS = """\
{criterion}
    optimizer : type, default=torch.optim.SGD
        Optimizer class, as in skorch; its arguments go through ``optimizer__*``.
    lr : float, default=0.01
        Learning rate, as in skorch.
    max_epochs : int, default=10
        Epochs of ordinary training of each mode (see the estimator's description).
    batch_size : int, default=128
        Mini-batch size for training (``-1``: the whole data set). Prediction and BatchNorm
        recalibration choose their own (see ``working_memory``). With BatchNorm in the
        module, a last training batch of one row is dropped from every epoch (BatchNorm
        cannot normalise one value per channel); the shuffle drops a different row each time.
    device : str or torch.device, default="cpu"
        Where members are trained and evaluated, e.g. ``"cuda"``.
    callbacks : list of skorch Callback instances or (name, callback) pairs, or None
        Extra skorch callbacks for every training phase of every member, each phase with
        its own copy (``LRScheduler``, ``EarlyStopping``, ``Checkpoint``...), except that
        learning-rate schedulers (``LRScheduler``) are left out of ESPRO's vertex, SPRO's
        connector and a curve's phases (see their ``*_callbacks``), and are overridden in
        FGE's cycles and SWAG's SWA phase, whose rates the method sets at every step. A
        callback that stops training early (``EarlyStopping``) ends the phase it runs in: a
        member's training, a mode, a vertex, connector or curve phase, FGE's pretraining or
        cycles, a SWAG run. A callback that monitors a ``valid_*`` score needs a
        ``train_split``. Each copy of a ``Checkpoint`` or ``TrainEndCheckpoint`` writes its
        own files: its ``fn_prefix`` gains ``member{i}_{phase}_`` (e.g.
        ``member2_vertex1_params.pt``).
    verbose : int, default=0
        0 prints nothing; 1 shows one progress bar over the whole fit (all members, phases
        and epochs), labelled with the member and phase; 2 adds skorch's per-epoch table of
        every phase, under a line naming member and phase. Colour codes are left out when
        the stream is not a terminal.
    train_split : callable or None, default=None
        skorch's validation split, e.g. ``skorch.dataset.ValidSplit(0.2)``. ``None`` trains
        on all the data (skorch's own default silently holds out 20%). The split is applied
        once per ``fit``: every member and every phase holds out the same rows and never
        trains on them (a ``ValidSplit`` without ``random_state`` is seeded from
        ``random_state``); BatchNorm statistics are recomputed on the training rows only.
    {class_weight}warm_start : bool, default=False
        As in scikit-learn's ensembles: refitting a fitted estimator on the same data after
        raising {growable} trains only what is new; what was trained stays bit-identical
        (members, and ESPRO's vertices and SPRO's connectors; ESPRO's points when
        ``n_vertices`` grows, and SPRO's, are drawn anew over the grown simplexes),
        ``epochs_spent_`` grows by what the refit spends, and new members draw their seeds
        where the earlier ones stopped (and hold out the same validation rows). Lowering a
        count, other data (rows, labels or weights; for a Dataset, its length and labels)
        or another module, is a ``ValueError``; refitting without raising a count warns and
        trains nothing. ``init_modes`` acts in the first fit only. A failed refit keeps the
        fitted state.
    random_state : int, RandomState instance or None, default=None
        Seeds every member's initial weights, data order and sampling. The same value gives
        the same predictions; across ``n_jobs`` settings they agree up to float rounding
        (worker processes run torch with one thread each, which changes the order of float
        sums). torch's global generators are left as they were.
    n_jobs : int or None, default=None
        Members trained in parallel through joblib (process backends: loky by default, Dask or
        Ray inside :func:`joblib.parallel_backend`). ``None`` means 1 outside such a context.
    working_memory : float or None, default=None
        Memory budget in MiB for one batch of prediction or BatchNorm recalibration, all
        members' work together (as scikit-learn's ``working_memory``); ``None`` uses
        ``sklearn.get_config()["working_memory"]`` (1024 by default). Ignored when
        ``iterator_valid__batch_size`` is set.
    member_memory : float or None, default=None
        Budget in MiB for the members' tensors on ``device`` during prediction and BatchNorm
        recalibration. ``None``: all members live on ``device``. When they do not fit, they
        stay on the CPU and are copied to ``device`` a group at a time for every batch:
        the same predictions, slower by the copies; ``working_memory`` then counts one
        group. For hundreds of members of a large module on one GPU.
    precision : {"float32", "bfloat16", "float16"}, default="float32"
        Mixed precision (``torch.autocast``) for the forward passes of training and
        prediction. Parameters, optimizer state and the loss's reduction stay float32, and
        ESPRO's and SPRO's volume term float64; ``"float16"`` adds a ``GradScaler`` (one
        host sync per step). Faster only on hardware with native support (GPUs, recent
        CPUs): on a CPU without it, measured 4-19 times slower.
    **kwargs
        Routed parameters, as in skorch: ``module__*``, ``optimizer__*`` (e.g.
        ``optimizer__momentum=0.9``), ``criterion__*``, ``iterator_train__*``,
        ``iterator_valid__*``, ``callbacks__*``, ``dataset__*``, ``compile__*``. Training data
        are shuffled every epoch unless ``iterator_train__shuffle=False``. Also passed to
        every member's net as in skorch when given: ``iterator_train`` and ``iterator_valid``
        (the loader classes of training and of the validation split), ``dataset`` (the
        Dataset class that wraps array inputs for training; per-sample transforms go there
        or in a torch Dataset given to ``fit``) and ``compile`` (``True``: ``torch.compile``
        of every training module, in place, with ``compile__*`` as its arguments; this
        covers ESPRO's, SPRO's and a curve's vmapped anchor modules too, with graph breaks
        where they check shapes). Prediction, BatchNorm recalibration and SWAG sampling run
        through the member stack, uncompiled and with their own batches."""

INIT_MODES_PARAMETER = """\
init_modes : fitted simplexens estimator, list of nn.Module, list of state dicts, or None, \
default=None
        Trained networks to start from instead of training the modes: a fitted estimator
        (what its ``mode_state_dicts()`` returns: DeepEnsemble's members, ESPRO's and
        SPRO's modes, a curve's endpoints, SWAG's SWA means, FGE's snapshots), modules of
        this estimator's module, or their state dicts (one module or state dict alone
        counts as a list of one). {count}; names and shapes must match the module. The
        ordinary training of the modes is skipped and ``epochs_spent_`` counts only what
        ``fit`` spends. SWAG's SWA means come with the
        last iterate's BatchNorm statistics: recompute them (``recalibrate_bn=True``) when
        starting from them. The given tensors are copied, never modified. ``clone`` (and so
        ``GridSearchCV``) copies an estimator given here without its fitted state: pass
        ``est.mode_state_dicts()`` to keep them."""

ANCHOR_PHASE_PARAMETERS = """\
{name}_schedule : {{"cosine", "constant"}}, default="cosine"
        The learning rate within each {phase} phase: its own cosine annealing from
        ``{name}_lr`` to 0 over the phase's steps, or ``{name}_lr`` held constant (then a
        learning-rate scheduler in ``{name}_callbacks`` may set it).
    {name}_callbacks : list of skorch callbacks or None, default=None
        The callbacks of the {phase} phases. ``None``: those of ``callbacks`` except
        learning-rate schedulers (``skorch.callbacks.LRScheduler``), which act in the modes'
        training only: a schedule set up for ``max_epochs`` would otherwise restart in every
        {phase} phase. A scheduler given here needs ``{name}_schedule="constant"``."""

_TARGET_ATTRIBUTES = {
    "classifier": """\
classes_ : ndarray of shape (n_classes,)
        The labels seen in ``fit``.""",
    "regressor": """\
n_targets_ : int
        Number of targets (columns of ``y``; 1 for 1-D ``y``).
    y_mean_, y_scale_ : ndarray of shape (n_targets_,)
        The standardisation of ``y`` in ``fit``: members train on ``(y - y_mean_) /
        y_scale_`` (sample-weighted mean and standard deviation; scale 1 for a constant
        target), and every prediction is returned in the units of ``y``.""",
}

COMMON_ATTRIBUTES = """\
{targets}
    n_features_in_ : int
        ``X.shape[1]`` seen in ``fit``.
    input_shape_ : tuple of int
        ``X.shape[1:]`` seen in ``fit``; prediction requires the same.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names, when ``X`` was a frame with string column names.
    n_members_ : int
        Number of parameter sets that prediction averages.
    epochs_spent_ : int
        Passes over the training data spent by gradient training, all members and phases.
    members_ : ParameterStack
        The members' parameters and buffers, stacked along a leading member axis.
    module_spec_ : ModuleSpec
        The recipe that builds a fresh module (class or factory and its arguments)."""


def fill_doc(cls):
    """Replace the ``{module}``, ``{likelihood}``, ``{training}``, ``{attributes}``,
    ``{init_modes}`` and ``{phases}`` fields of a docstring, in the words of the class's head
    (``cls._head``); ``init_modes`` counts ``cls._init_count_name``, and the anchor phases are
    named by ``cls._phase_names`` (parameter prefix, phase). The unformatted docstring is kept
    as ``cls._doc_template`` for :func:`regressor_doc`."""
    head = cls._head
    name, phase = getattr(cls, "_phase_names", ("vertex", "vertex"))
    growable = " or ".join(f"``{c}``" for c in cls._growable) or "a count (it has none to raise)"
    training = TRAINING_PARAMETERS.replace("{growable}", growable)
    training = training.replace("{criterion}", _CRITERION[head])
    training = training.replace("{class_weight}", _WEIGHTS[head])
    cls._doc_template = cls.__doc__
    cls.__doc__ = cls.__doc__.format(
        module=MODULE_PARAMETER[head],
        likelihood=LIKELIHOOD_PARAMETER,
        training=training,
        attributes=COMMON_ATTRIBUTES.replace("{targets}", _TARGET_ATTRIBUTES[head]),
        init_modes=INIT_MODES_PARAMETER.format(count=_init_count_text(cls._init_count_name)),
        phases=ANCHOR_PHASE_PARAMETERS.format(name=name, phase=phase),
    )
    return cls


def _init_count_text(name: str) -> str:
    """How many networks ``init_modes`` holds: a parameter's name, or a phrase."""
    return f"Their number must equal ``{name}``" if name.isidentifier() else f"They are {name}"


def _section(doc: str, start: str, end: str) -> str:
    """The text of ``doc`` from the line after ``start`` up to ``end`` (exclusive); empty
    when a blank line follows ``start``."""
    begin = doc.index(start) + len(start)
    if doc.startswith("\n", begin):
        return ""
    stop = doc.find(end, begin)
    return doc[begin:].rstrip() if stop < 0 else doc[begin:stop]


def regressor_doc(classifier, example: str):
    """Decorator: the regressor's docstring, built from ``classifier``'s template.

    The method's parameters, its fitted attributes and its references are those of the
    classifier; the summary, the head's sections and the example are the regressor's.
    ``example`` is the code of the Examples section (doctest lines, unindented).
    """

    def decorate(cls):
        template = classifier._doc_template
        parameters = _section(template, "{module}\n", "    {training}")
        parameters = parameters.replace("(see above)", f"(see :class:`{classifier.__name__}`)")
        parameters = parameters.replace("train accuracy", "train accuracy, on classifiers")
        attributes = _section(template, "{attributes}\n", "\n\n").rstrip("\n")
        attributes = "\n" + attributes if attributes else ""
        references = _section(template, "References\n    ----------\n", "\n\n")
        if "Lakshminarayanan" not in references:
            number = references.count(".. [") + 1
            references += f"""
    .. [{number}] B. Lakshminarayanan, A. Pritzel, C. Blundell. "Simple and Scalable
       Predictive Uncertainty Estimation using Deep Ensembles." NeurIPS 2017 (the Gaussian
       members and their mixture)."""
        examples = "\n".join(f"    {line}" if line else "" for line in example.splitlines())
        method = classifier.__name__[: -len("Classifier")]
        cls.__doc__ = f"""{method} as a regressor: a Gaussian predictive from the members.

    The method of :class:`{classifier.__name__}` (its description holds here, with the
    Gaussian negative log-likelihood, or the squared error, in place of the cross-entropy),
    with a regression head: each member predicts a Gaussian per target under
    ``likelihood``; ``fit`` standardises ``y`` per target and the members train on the
    standardised values; prediction is the uniform mixture of the members' Gaussians, in the
    units of ``y``: :meth:`predict` (``return_std=True`` adds its standard deviation),
    :meth:`predict_moments` (aleatoric and epistemic variance), :meth:`predict_interval`,
    :meth:`predict_quantiles` and :meth:`predict_member_distribution`. ``y`` may have several
    columns (targets).

    Parameters
    ----------
    {{module}}
    {{likelihood}}
{parameters}    {{training}}

    Attributes
    ----------
    {{attributes}}{attributes}

    See Also
    --------
    {classifier.__name__}

    References
    ----------
{references}

    Examples
    --------
{examples}
    """
        return fill_doc(cls)

    return decorate
