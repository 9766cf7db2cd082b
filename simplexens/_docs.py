"""Docstring sections shared by the four estimators."""

from __future__ import annotations

MODULE_PARAMETER = """\
module : nn.Module subclass, callable returning an nn.Module, or nn.Module instance
        The network. A class or factory is called once per member with the ``module__*``
        parameters; an instance is deep-copied and re-initialised (``reset_parameters``) per
        member. A constructor argument named ``n_features_in`` or ``n_classes`` is filled
        from the data unless set through ``module__*``. The module returns logits of shape
        ``(n_samples, n_classes)``."""

TRAINING_PARAMETERS = """\
criterion : type, default=torch.nn.CrossEntropyLoss
        Loss on the module's logits, as in skorch.
    optimizer : type, default=torch.optim.SGD
        Optimizer class, as in skorch; its arguments go through ``optimizer__*``.
    lr : float, default=0.01
        Learning rate, as in skorch.
    max_epochs : int, default=10
        Epochs of ordinary training of each mode (see the estimator's description).
    batch_size : int, default=128
        Mini-batch size for training and prediction (``-1``: the whole data set); prediction
        uses ``iterator_valid__batch_size`` when set.
    device : str or torch.device, default="cpu"
        Where members are trained and evaluated, e.g. ``"cuda"``.
    callbacks : list of skorch callbacks or None, default=None
        Extra skorch callbacks for every member's training (``ProgressBar``, ``LRScheduler``,
        ``EarlyStopping``...).
    verbose : int, default=0
        skorch's verbosity; 0 prints nothing, 1 prints each member's epoch table.
    train_split : callable or None, default=None
        skorch's validation split. ``None`` trains on all the data (skorch's own default
        silently holds out 20%).
    random_state : int, RandomState instance or None, default=None
        Seeds every member's initial weights, data order and sampling. The same value gives
        the same predictions; across ``n_jobs`` settings they agree up to float rounding
        (worker processes run torch with one thread each, which changes the order of float
        sums). torch's global generators are left as they were.
    n_jobs : int or None, default=None
        Members trained in parallel through joblib (process backends: loky by default, Dask or
        Ray inside :func:`joblib.parallel_backend`). ``None`` means 1 outside such a context.
    **kwargs
        Routed parameters, as in skorch: ``module__*``, ``optimizer__*`` (e.g.
        ``optimizer__momentum=0.9``), ``criterion__*``, ``iterator_train__*``,
        ``iterator_valid__*``, ``callbacks__*``. Training data are shuffled every epoch unless
        ``iterator_train__shuffle=False``."""

COMMON_ATTRIBUTES = """\
classes_ : ndarray of shape (n_classes,)
        The labels seen in ``fit``.
    n_features_in_ : int
        ``X.shape[1]`` seen in ``fit``.
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
    """Replace the ``{module}``, ``{training}`` and ``{attributes}`` fields of a docstring."""
    cls.__doc__ = cls.__doc__.format(
        module=MODULE_PARAMETER, training=TRAINING_PARAMETERS, attributes=COMMON_ATTRIBUTES
    )
    return cls
