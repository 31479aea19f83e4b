"""scikit-learn-style estimators over the encrypted pipeline.

    from hetrain.estimators import EncryptedLogisticRegression
    clf = EncryptedLogisticRegression().fit(X_train, y_train)     # planned, refreshed, early-stopped
    clf.score(X_test, y_test)
    cross_val_score(make_pipeline(StandardScaler(), EncryptedLogisticRegression()), X, y, cv=3)

``fit`` runs the same pipeline as ``hetrain fit``: standardisation on the client, keys, encryption,
training in a separate server process that gets public material only, decryption and release.
Prediction uses the decrypted (rounded) weights in plaintext. Hyperparameters left at ``None``
take the trainer's defaults. As in scikit-learn, ``__init__`` only stores its arguments.

Parameters: the trainer options of the estimator's trainers, derived from their typed configs
(hetrain.models.configs: mlr and mlr-minibatch for EncryptedLogisticRegression, mlp-dvr and
mlp-diagonal for EncryptedMLPClassifier; ``None``: planned or the trainer's default), then the job's
own (``_job_params``: refresh, preset, backend, ...). ``fit`` checks the options given with the config
of the trainer it resolves to, exactly as ``hetrain fit`` checks its command line (configs.user_config):
an option that trainer does not have raises UnknownOptionError naming the trainers that have it, a
bad value OptionTypeError / OptionRangeError naming the valid values; a parameter neither trainer has
raises EstimatorParamError at construction.

``random_state`` (None, an int ≥ 0 or a ``numpy.random.RandomState``) seeds the run's randomness:
the split, the shuffles and initial weights, and the keys on the sim backend. ``seed`` is its old
name, deprecated: it still works for this release and warns (FutureWarning) at ``fit``.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from hetrain.data.validate import check_features, check_labels
from hetrain.errors import DataError, HetrainUserError

_DEPRECATED = "deprecated"  # the default of a deprecated parameter (scikit-learn's convention)


class EstimatorParamError(HetrainUserError, TypeError):
    """An estimator was given a parameter it does not have (e.g. a trainer option of the other family)."""


class _DerivedInit:
    """The estimators' ``__init__``: keyword parameters derived, when asked, from the trainer configs
    (hetrain.models.configs.family_options: every user option of the family's trainers, default None:
    planned or the trainer's) and the class's job parameters (``_job_params``). Its ``__signature__``
    is what scikit-learn's get_params/set_params/clone and repr read, so a field added to a trainer
    config is a parameter at once. As scikit-learn requires, it only stores its arguments."""

    def __get__(self, obj, cls):
        import inspect
        import types

        params = cls._param_defaults()

        def __init__(est, **kwargs):
            unknown = sorted(set(kwargs) - set(params))
            if unknown:
                raise EstimatorParamError(f"{cls.__name__} has no parameter {', '.join(map(repr, unknown))}; its "
                                          f"parameters: {', '.join(params)}")
            for name, default in params.items():
                setattr(est, name, kwargs.get(name, default))

        __init__.__qualname__ = f"{cls.__name__}.__init__"
        __init__.__signature__ = inspect.Signature(
            [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
            + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
               for name, default in params.items()])
        return __init__ if obj is None else types.MethodType(__init__, obj)


class _EncryptedClassifier(ClassifierMixin, BaseEstimator):
    _model_name = "abstract"
    _family = "mlr"                  # hetrain.models.configs.FAMILIES: the trainers whose options are parameters
    _trainer_defaults: dict = {}     # a trainer option's default when not None
    _job_params: dict = {}           # the job's own parameters and their defaults

    __init__ = _DerivedInit()

    @classmethod
    def _param_defaults(cls) -> dict:
        from hetrain.models import configs

        trainer = {name: cls._trainer_defaults.get(name) for name in configs.family_options(cls._family)}
        return {**trainer, **cls._job_params}

    def _refresh_mode(self) -> str:
        return getattr(self, "refresh", "none")

    def _trainer(self, n_features: int | None) -> str:
        from hetrain.models import configs

        return configs.trainer_for(self._model_name, self._refresh_mode(), getattr(self, "layout", None), n_features)

    def _user_config(self, n_features: int | None = None):
        """The trainer options set (not None), checked by the config of the trainer this fit resolves to
        (models/configs.py user_config, the same check as `hetrain fit`'s options)."""
        from hetrain.models import configs

        given = {name: getattr(self, name, None) for name in configs.family_options(self._family)}
        return configs.user_config(self._trainer(n_features), given, style="python")

    def _config(self, n_features: int | None = None) -> dict:
        """The trainer config this estimator's parameters give (given options only: the planner chooses
        the others)."""
        return self._user_config(n_features).config

    def _options(self, seed: int | None, n_features: int | None = None) -> dict:
        """Job options beyond the trainer's config (mini-batch mlr adds its own); ``seed``: ``_seed()``'s."""
        return {"scale": self.scale, "seed": seed, **self._user_config(n_features).job}

    def _seed(self) -> int | None:
        """The run's seed from ``random_state`` (or the deprecated ``seed``, with a FutureWarning).

        None: fresh randomness; an int ≥ 0: itself; a RandomState: one draw from it (as scikit-learn
        estimators do). HetrainUserError for anything else, or when both names are given differently."""
        rs = self.random_state
        seed = getattr(self, "seed", _DEPRECATED)
        if not (isinstance(seed, str) and seed == _DEPRECATED):
            import warnings

            warnings.warn("the parameter seed was renamed random_state (scikit-learn's name); seed will be removed "
                          f"in the next release: pass random_state={seed!r}", FutureWarning, stacklevel=3)
            if rs is not None and rs is not seed and rs != seed:
                raise HetrainUserError(f"seed={seed!r} and random_state={rs!r} disagree: give random_state only "
                                       "(seed is its deprecated name)")
            rs = seed
        if rs is None:
            return None
        if isinstance(rs, np.random.RandomState):
            return int(rs.randint(2**31 - 1))
        if isinstance(rs, (int, np.integer)) and not isinstance(rs, bool) and rs >= 0:
            return int(rs)
        raise HetrainUserError(f"random_state must be None, an int >= 0 or a numpy.random.RandomState, got {rs!r} "
                               "(e.g. random_state=0)")

    def _labelled(self, X, y) -> tuple[np.ndarray, np.ndarray]:
        """Checked (X, the labels the model trains on); sets ``classes_`` and ``n_features_in_``.

        ``classes_`` is ``np.unique(y)`` (scikit-learn's LabelEncoder). Whole-number and text labels go
        to the model as they are (hetrain.data.check_labels: the same sorted classes, so ``model_``'s
        ``predict`` and its file give the original labels, like ``hetrain fit``); other labels
        (fractional numbers, ...) as their index in ``classes_``."""
        X = check_features(X)
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise DataError(f"y must be 1-D with one label per row of X ({X.shape[0]}), got shape {y.shape}")
        self.classes_, y_index = np.unique(y, return_inverse=True)
        self.n_features_in_ = X.shape[1]
        try:
            labels = check_labels(y)
        except DataError:
            return X, y_index
        same_order = np.unique(labels).tolist() == check_labels(self.classes_).tolist()
        return X, (labels if same_order else y_index)

    def fit(self, X, y):
        """Train through the same steps as `hetrain fit` (hetrain.protocol.fit). After fitting:
        ``model_``, ``fit_stats_``, ``twin_max_abs_diff_`` and ``partial_`` (True when the time limit,
        or a failure after the first validated epoch, stopped mini-batch training early: the model is
        then the best on validation so far, and a HetrainWarning says so)."""
        import warnings

        from hetrain.errors import HetrainWarning
        from hetrain.protocol import fit

        seed = self._seed()
        X, y_index = self._labelled(X, y)
        d = X.shape[1]
        result = fit(X, y_index, self._model_name, self._config(d), refresh=self._refresh_mode(), preset=self.preset,
                     backend=self.backend, progress=self.verbose, log=print if self.verbose else None,
                     **self._options(seed, d))
        self.model_, self.fit_stats_ = result.model, result.stats
        self.twin_max_abs_diff_ = result.twin_max_abs_diff
        self.partial_ = result.partial
        if self.partial_:
            warnings.warn(f"training stopped early ({result.stats['stop_reason']}): the model is the best on "
                          "validation so far", HetrainWarning, stacklevel=2)
        return self

    def decision_function(self, X) -> np.ndarray:
        """The trainer's per-class scores (n x n_classes) on the decrypted weights."""
        check_is_fitted(self, "model_")
        return self.model_.predict_scores(X)

    def predict_proba(self, X) -> np.ndarray:
        """Softmax of the per-class scores: rows sum to 1 and follow ``predict`` (not calibrated:
        the trainers fit one sigmoid per class, one-vs-rest)."""
        from hetrain.protocol.model import softmax

        return softmax(self.decision_function(X))

    def predict(self, X) -> np.ndarray:
        scores = self.decision_function(X)  # checks fitted first
        return self.classes_[np.argmax(scores, axis=1)]


class EncryptedLogisticRegression(_EncryptedClassifier):
    """Multiclass logistic regression (one sigmoid per class) trained on CKKS-encrypted data.

    Default (``refresh="auto"``, no ``iterations``): what ``hetrain fit`` does — the client plans the
    run on its plaintext (models/mlr_minibatch_plan.py: sigmoid approximation, step, L2, momentum, batch
    size, whitening, by 3-fold rehearsal), then mini-batch epochs run under encryption with client
    refresh (bootstrapping on the desilo backend) until the validation split stops improving, within
    ``epochs`` (default 100) and ``time_limit`` (seconds). ``iterations=N`` or ``refresh="none"``:
    the published full-batch trainer in one modulus chain (no interaction). After ``fit``:
    ``partial_`` is True when the time limit (or a failure after the first epoch) stopped training
    early; the model is then the best on validation so far (a HetrainWarning says so).
    """

    _model_name = "mlr"
    _family = "mlr"
    _job_params = {"time_limit": None, "refresh": "auto", "validation_fraction": 0.2, "preset": "auto",
                   "backend": "seal", "scale": 1.0, "random_state": None, "verbose": False, "seed": _DEPRECATED}

    def _refresh_mode(self) -> str:
        from hetrain.protocol.client_jobs import resolve_refresh

        if self._model_name != "mlr" and self.refresh == "auto":  # subclasses over other trainers
            return "none"
        return resolve_refresh(self.refresh, self._model_name, {"iterations": self.iterations}, self.backend, 0)

    def _options(self, seed: int | None, n_features: int | None = None) -> dict:
        if self._refresh_mode() == "none":
            return super()._options(seed, n_features)
        return {**super()._options(seed, n_features), "validation_fraction": self.validation_fraction,
                "time_limit": self.time_limit}


class EncryptedMLPClassifier(_EncryptedClassifier):
    """A network with one or two hidden sigmoid layers trained on CKKS-encrypted data.

    Every hyperparameter left at ``None`` (``hidden`` included) is chosen by the client's planner on the
    plaintext training data before any key is made, exactly as ``hetrain fit --model mlp`` does
    (``plan_defaults`` in hetrain.models.mlp_dvr / mlp_diagonal): one hidden layer (16 units for the dvr
    layout, 4 for the diagonal one), learning rate(s), sigmoid intervals, mini-batches and label smoothing
    (dvr), and the number of iterations; what it chose is in ``fit_stats_["defaults"]`` and
    ``model_.config``. Given values are kept. ``refresh="client"`` lets the server have its state
    re-encrypted between iterations, so the planner may run as many iterations as its time budget allows
    (~7 min of SEAL server time); with ``"none"`` (the CLI's default) training stops where one modulus
    chain ends (1-2 iterations), which is fast but under-trained.

    ``layout``: "auto" (diagonal packing up to 16 features, double Volley Revolver above), "dvr" or
    "diagonal" (see hetrain.models.base.resolve_model).
    """

    _model_name = "mlp"
    _family = "mlp"
    _trainer_defaults = {"layout": "auto"}
    _job_params = {"preset": "auto", "backend": "seal", "scale": 1.0, "random_state": None, "verbose": False,
                   "refresh": "none", "seed": _DEPRECATED}


__all__ = ["EncryptedLogisticRegression", "EncryptedMLPClassifier"]
