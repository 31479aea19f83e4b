"""Typed trainer configs: one frozen dataclass per trainer, the one source of its options.

Every option a trainer reads from its config is a field here, with its metadata (``Option``): the
kind of value (``Kind``: type, valid range or choices, parser of a command-line string such as
hidden ``"32,16"`` → ``[32, 16]``), its default, its help text, whether a user sets it (``user``;
the others are written by the client's planner or protocol and only checked in a job.json), whether
``hetrain fit`` and the estimators plan it on the data when not given (``planned``) and, for the
few that are a bound of the job rather than the trainer's own value, the job option that carries it
(``job_option``: mini-batch ``epochs`` is the planner's most epochs, ``protocol.fit(max_epochs=)``).
Which trainers use an option is where it is declared: ``trainers_with(name)``.

Derived from these classes, with no other list to keep:

* the trainers' ``DEFAULTS`` dicts (``MLRConfig.defaults()``, ...);
* the trainer options of ``hetrain fit``/``encrypt``/``demo`` (cli/fit.add_trainer_arguments), their
  help (each trainer's default) and the keys ``--config`` files accept (cli/config.py);
* the estimators' parameters (hetrain/estimators.py: ``family_options``), so ``get_params``,
  ``set_params`` and ``clone`` see a new field at once;
* the server's check of job.json (``check_job_config``, called by protocol/bundle_check.py before any
  ciphertext is read): an unknown key, a value of the wrong type or out of range is refused with
  an error whose ``code`` says which (``config-unknown-key``, ``config-wrong-type``,
  ``config-out-of-range``).

A user's options go through ``user_config(trainer, values, style)``: each value given (a string
from the command line is parsed; a Python or TOML value is checked as it is) is validated by its
field and the ones not given are left out, so the planners still choose them (models/mlp_dvr.py
``plan_defaults``, models/mlr_minibatch_plan.py). Fields are validated one by one; rules that tie
several fields (``sigmoid_layers`` has one spec per weight layer, a batch a multiple of the
layout's samples) stay in the trainers, which know the values the planner chose.

Why dataclasses and not pydantic: the core install (numpy, scikit-learn, TenSEAL) must not grow a
dependency that only the optional ``service`` extra has today, and the rules here are per-field
ranges and choices that a ``Kind`` states in a few lines each, with messages in the project's own
words (the option's name as the user typed it: ``--learning-rate`` on the command line,
``learning_rate`` in Python, and the valid values). A frozen dataclass gives the field list,
defaults and metadata that argparse, scikit-learn's ``get_params`` and the job check read.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

from .option_kinds import (Beta, Bool, Choice, Float, Int, IntList, Matrix, Option, OptionTypeError, Sigmoid,
                           SigmoidList, TrainerConfigError, UnknownOptionError, accept, display, option)


# ====================================================================== the configs
CONFIGS: dict[str, type["TrainerConfig"]] = {}

# what a user asks for (--model, the estimators) → the registry names that implement it
FAMILIES: dict[str, tuple[str, ...]] = {"mlr": ("mlr", "mlr-minibatch"), "mlp": ("mlp-dvr", "mlp-diagonal")}


def register_config(cls: type["TrainerConfig"]) -> type["TrainerConfig"]:
    """Class decorator: ``cls`` is the config of the trainer named ``cls.trainer``."""
    CONFIGS[cls.trainer] = cls
    return cls


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """Base of the trainer configs: every field validated (and normalised) on construction."""

    trainer: ClassVar[str] = "abstract"
    usage: ClassVar[str] = ""   # how the command line reaches this trainer, e.g. "--model mlr with refresh"
    hints: ClassVar[dict[str, str]] = {}  # option given to this trainer by mistake → what to do ({name}: its flag)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, accept(self.trainer, f.name, f.metadata["hetrain"], getattr(self, f.name)))

    @classmethod
    def options(cls) -> dict[str, Option]:
        """Field name → Option, in declaration order."""
        return {f.name: f.metadata["hetrain"] for f in dataclasses.fields(cls)}

    @classmethod
    def defaults(cls) -> dict:
        """Field name → default as JSON holds it (the trainer's ``DEFAULTS``)."""
        return {f.name: f.metadata["hetrain"].kind.plain(f.default) for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, values: dict, style: str = "python") -> "TrainerConfig":
        """A config from ``values`` (missing keys: defaults). UnknownOptionError for a key the trainer
        does not have; OptionTypeError / OptionRangeError for a bad value."""
        own = cls.options()
        for key in values:
            if key not in own:
                raise UnknownOptionError(cls.trainer, str(key), f"is not an option of {cls.trainer}; its options: "
                                         f"{', '.join(display(k, style) for k in own)}", style)
        try:
            return cls(**values)
        except TrainerConfigError as exc:
            raise exc.styled(style) from None

    def to_dict(self) -> dict:
        """The config as a JSON-able dict (field name → value; tuples as lists): a trainer's config."""
        return {f.name: f.metadata["hetrain"].kind.plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _max_epochs_text() -> str:
    from hetrain.models.mlr_minibatch_plan import DEFAULT_MAX_EPOCHS

    return f"{DEFAULT_MAX_EPOCHS} (the planner and early stopping usually end sooner)"


def _batch_sizes_text() -> str:
    from hetrain.models.mlr_minibatch_plan import BATCH_SIZES

    return f"planned among {', '.join(map(str, BATCH_SIZES))} (the trainer alone: 128)"


def _patience_text() -> str:
    from hetrain.models.mlr_minibatch_plan import DEFAULT_PATIENCE

    return f"{DEFAULT_PATIENCE} (the trainer alone: 3)"


_LR = "step size (a multiplier on the step)"
_SIGMOID = "sigmoid approximation"


@register_config
@dataclasses.dataclass(frozen=True)
class MLRConfig(TrainerConfig):
    """Full-batch mlr in one modulus chain (models/mlr.py)."""

    trainer: ClassVar[str] = "mlr"
    usage: ClassVar[str] = "--model mlr --refresh none"

    iterations: int = option(3, Int(low=1), "full-batch training iterations (the most that fit n16384-deep; "
                             "mini-batch mlr counts epochs instead)")
    learning_rate: float = option(4.0, Float(low=0.0, low_open=True), _LR)
    sigmoid: str = option("published", Sigmoid(), _SIGMOID)
    momentum: str = option("none", Choice(("none", "nesterov")), "momentum (mlr-minibatch: a heavy-ball β)")
    layout: str = option("blocked", Choice(("auto", "blocked", "volley-revolver")),
                         "packing")


@register_config
@dataclasses.dataclass(frozen=True)
class MiniBatchConfig(TrainerConfig):
    """mlr with refresh: mini-batch epochs (models/mlr_minibatch.py), planned by models/mlr_minibatch_plan.py."""

    trainer: ClassVar[str] = "mlr-minibatch"
    usage: ClassVar[str] = "--model mlr with refresh"
    hints: ClassVar[dict[str, str]] = {
        "iterations": "counts full-batch iterations of refresh none; with refresh, mlr trains in mini-batch "
                      "epochs: use {epochs} N (or refresh none with {iterations} N)"}

    epochs: int = option(10, Int(low=1), "the most passes over the training rows", planned=True,
                         job_option="max_epochs", default_text=_max_epochs_text)
    batch_size: int = option(128, Int(low=1), "rows per mini-batch", planned=True, default_text=_batch_sizes_text)
    learning_rate: float = option(4.0, Float(low=0.0, low_open=True), _LR, planned=True)
    sigmoid: str = option("published", Sigmoid(), _SIGMOID, planned=True)
    patience: int = option(3, Int(low=0), "epochs without validation progress before stopping (0: off)",
                           default_text=_patience_text)
    layout: str = option("blocked", Choice(("auto", "blocked")), "packing")
    momentum: Any = option("none", Beta(), "momentum", planned=True)
    weight_decay: float = option(0.0, Float(low=0.0, high=1.0), "per-step shrink of the non-bias weights (L2)",
                                 planned=True)


@register_config
@dataclasses.dataclass(frozen=True)
class MLPConfig(TrainerConfig):
    """The network with the double Volley Revolver packing (models/mlp_dvr.py, "mlp-dvr")."""

    trainer: ClassVar[str] = "mlp-dvr"
    usage: ClassVar[str] = "--model mlp --layout dvr"

    hidden: tuple = option((32, 16), IntList(), "hidden layer widths", planned=True)
    iterations: int = option(1, Int(low=1), "training iterations (mini-batch steps with a batch size)", planned=True)
    learning_rate: float = option(2.0, Float(low=0.0, low_open=True), _LR, planned=True)
    sigmoid: str = option("published", Sigmoid(), _SIGMOID, planned=True)
    sigmoid_layers: Any = option(None, SigmoidList(), "one sigmoid spec per weight layer (overrides sigmoid)",
                                 planned=True)
    momentum: str = option("nesterov", Choice(("nesterov", "none")), "momentum", planned=True)
    seed: int = option(0, Int(low=0), "seed of the initial weights and the row order (the job's --seed)", user=False)
    init_scale: float = option(1.0, Float(low=0.0, low_open=True), "multiplies the Glorot bound of the initial weights")
    check_interval: bool = option(True, Bool(), "the client refuses a job whose twin leaves a polynomial's interval",
                                  user=False)
    layout: str = option("dvr", Choice(("dvr", "auto")), "packing")
    input_clip: Any = option(None, Float(low=0.0, low_open=True, optional=True),
                             "clip the standardised inputs to [-c, c]", planned=True)
    centred_hidden: bool = option(False, Bool(), "hidden layers use sigmoid - 1/2", planned=True)
    batch_size: Any = option(None, Int(low=1, optional=True), "rows per mini-batch (none: full batch)", planned=True)
    label_smoothing: float = option(0.0, Float(low=0.0, high=0.5), "targets s and 1 - s instead of 0 and 1",
                                    planned=True)
    components: Any = option(None, Int(low=1, optional=True),
                             "input width after the client's projection onto principal components", planned=True)
    projection: Any = option(None, Matrix(), "the client's input projection (never sent to the server)", user=False)


@register_config
@dataclasses.dataclass(frozen=True)
class DiagonalMLPConfig(TrainerConfig):
    """The one-hidden-layer network with diagonal packing (models/mlp_diagonal.py)."""

    trainer: ClassVar[str] = "mlp-diagonal"
    usage: ClassVar[str] = "--model mlp --layout diagonal"

    iterations: Any = option(None, Int(low=1, optional=True), "training iterations (none: as many as fit)",
                             planned=True)
    learning_rate: float = option(16.0, Float(low=0.0, low_open=True), "output layer step size", planned=True)
    hidden_learning_rate: float = option(8.0, Float(low=0.0, low_open=True), "hidden layer step size", planned=True)
    sigmoid: str = option("deg7:24", Sigmoid(), "hidden sigmoid approximation")
    output_sigmoid: str = option("deg1:16", Sigmoid(degree=1), "output sigmoid approximation (degree 1: its slope "
                                 "is folded into the data)")
    hidden: tuple = option((4,), IntList(max_len=1, example="4"), "hidden layer width")
    layout: str = option("diagonal", Choice(("diagonal", "auto")), "packing")
    momentum: str = option("none", Choice(("none",)), "momentum (Nesterov would cost a level per iteration)")
    init_gain: float = option(2.5, Float(low=0.0, low_open=True), "scale of the initial hidden weights")
    hidden_bias: float = option(0.5, Float(), "value of the hidden bias unit")
    transpose: str = option("packed", Choice(("packed", "repacked")), "W2 transpose: packed, or the naive re-packing")


# ====================================================================== derived views
def config_class(trainer: str) -> type[TrainerConfig] | None:
    """The config class of a registry name (None: a trainer without one, e.g. a test's toy trainer)."""
    return CONFIGS.get(trainer)


def user_options() -> dict[str, list[tuple[str, Option, Any]]]:
    """Every option a user can set, by name (first declared first): [(trainer, Option, default), ...]
    for each trainer that has it. The CLI's trainer options, the --config keys and, per family, the
    estimators' parameters are these."""
    out: dict[str, list] = {}
    for trainer, cls in CONFIGS.items():
        for f in dataclasses.fields(cls):
            opt = f.metadata["hetrain"]
            if opt.user:
                out.setdefault(f.name, []).append((trainer, opt, f.default))
    return out


def family_options(family: str) -> list[str]:
    """The user options of the trainers of ``family`` ("mlr", "mlp"): an estimator's trainer parameters."""
    trainers = FAMILIES[family]
    return [name for name, uses in user_options().items() if any(t in trainers for t, _, _ in uses)]


def trainers_with(name: str) -> list[str]:
    """The trainers that have the option ``name``."""
    return [t for t, cls in CONFIGS.items() if name in cls.options()]


def cli_help(name: str) -> str:
    """The help of ``--NAME``: what it is, its valid values (per trainer where they differ) and each
    trainer's default."""
    uses = user_options()[name]
    valid = {opt.kind.valid for _, opt, _ in uses}
    values = (next(iter(valid)) if len(valid) == 1 else
              "; ".join(f"{trainer}: {opt.kind.valid}" for trainer, opt, _ in uses))
    defaults = "; ".join(f"{trainer} {opt.default_words(default)}" for trainer, opt, default in uses)
    return f"{uses[0][1].help}. Values: {values}. Default: {defaults}".replace("%", "%%")


def trainer_for(model: str, refresh: str, layout: str | None, n_features: int | None) -> str:
    """The registry name that trains ``model`` (``--model``) with ``refresh`` (resolved: not "auto"):
    mlr is full-batch with refresh none and mini-batch otherwise; mlp resolves through ``layout``."""
    from .base import resolve_model

    if model == "mlr":
        return "mlr" if refresh == "none" else "mlr-minibatch"
    return resolve_model(model, layout or "auto", n_features)


class UserConfig(NamedTuple):
    """What a user's options give: the trainer ``config`` (given keys only: the planner chooses the
    others), the ``job`` options they set (e.g. max_epochs), and every given ``value`` as checked."""

    config: dict
    job: dict
    values: dict


def user_config(trainer: str, values: dict, style: str = "python") -> UserConfig:
    """Check the options a user gave (``values``: name → value, None meaning not given) for the
    trainer named ``trainer``. ``style``: "cli" (errors name --batch-size) or "python" (batch_size).

    Raises UnknownOptionError (an option this trainer does not have: which trainers have it, and how
    to reach them), OptionTypeError, OptionRangeError. A trainer without a config class gets the
    values checked by the first config that has the option and decides about the rest itself."""
    given = {k: v for k, v in values.items() if v is not None}
    cls = CONFIGS.get(trainer)
    if cls is None:
        known = user_options()
        checked = {k: accept(trainer, k, known[k][0][1], v, style) if k in known else v for k, v in given.items()}
        plain = {k: known[k][0][1].kind.plain(v) if k in known else v for k, v in checked.items()}
        return UserConfig(plain, {}, plain)
    own = cls.options()
    for key in given:
        if key not in own or not own[key].user:
            raise _not_here(cls, key, style)
    checked = {}
    for key, value in given.items():
        try:
            checked[key] = own[key].kind.plain(accept(trainer, key, own[key], value, style))
        except TrainerConfigError as exc:
            raise exc.styled(style) from None
    config = {k: v for k, v in checked.items() if own[k].job_option is None}
    job = {own[k].job_option: v for k, v in checked.items() if own[k].job_option is not None}
    return UserConfig(config, job, checked)


def _not_here(cls: type[TrainerConfig], key: str, style: str) -> UnknownOptionError:
    if key in cls.hints:
        names = {k: display(k, style) for k in user_options()}
        return UnknownOptionError(cls.trainer, key, cls.hints[key].format(**names), style)
    having = [t for t in trainers_with(key) if CONFIGS[t].options()[key].user]
    where = (", ".join(f"{CONFIGS[t].usage} ({t})" if style == "cli" else t for t in having)
             if having else "no trainer")
    this = f"{cls.usage} ({cls.trainer})" if style == "cli" else cls.trainer
    return UnknownOptionError(cls.trainer, key, f"applies to {where}; this run is {this}", style)


def check_job_config(model: str, config) -> dict | None:
    """The trainer config of a job.json (``model``: its registry name) through the trainer's schema:
    the normalised config, or None for a trainer without one (its own ``__init__`` checks it).
    Every key must be a field (user's or planner's); the values' types and ranges as for a user.
    Raises UnknownOptionError / OptionTypeError / OptionRangeError (``code`` says which)."""
    cls = CONFIGS.get(model)
    if cls is None:
        return None
    if not isinstance(config, dict):
        raise OptionTypeError(model, "config", "must be an object of option names to values")
    return cls.from_dict(config).to_dict()
