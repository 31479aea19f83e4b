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
field and the ones not given are left out, so the planners still choose them (models/mlp.py
``plan_defaults``, models/minibatch_plan.py). Fields are validated one by one; rules that tie
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
import math
import numbers
from typing import Any, Callable, ClassVar, NamedTuple

from hetrain.errors import HetrainUserError


# ====================================================================== errors
class TrainerConfigError(HetrainUserError, ValueError):
    """A trainer option is unknown, of the wrong type or out of range.

    ``trainer``: the registry name; ``option``: the field name; ``detail``: what is wrong, with the
    valid values; ``code``: a stable identifier of the kind of error (job.json refusals carry it)."""

    code = "config-invalid"

    def __init__(self, trainer: str, option: str, detail: str, style: str = "python") -> None:
        self.trainer, self.option, self.detail, self.style = trainer, option, detail, style
        super().__init__(self._text())

    def _text(self) -> str:
        if self.style == "cli":
            return f"{display(self.option, 'cli')} {self.detail}"
        return f"{self.trainer}: {self.option} {self.detail}"

    def styled(self, style: str) -> "TrainerConfigError":
        """The same error naming the option as ``style`` writes it ("cli": --learning-rate)."""
        return type(self)(self.trainer, self.option, self.detail, style)


class UnknownOptionError(TrainerConfigError, TypeError):
    """An option the trainer does not have."""

    code = "config-unknown-key"


class OptionTypeError(TrainerConfigError, TypeError):
    """A value of the wrong type (a string for a number, a fraction for a count, ...)."""

    code = "config-wrong-type"


class OptionRangeError(TrainerConfigError):
    """A value of the right type outside the valid range or choices."""

    code = "config-out-of-range"


class ConfigTypeError(Exception):
    """Raised by a Kind's ``coerce``/``parse`` (no option named yet); ``accept`` turns it into
    OptionTypeError naming the option and the valid values."""


def display(name: str, style: str) -> str:
    """An option's name as a user writes it: ``--batch-size`` ("cli") or ``batch_size`` ("python")."""
    return f"--{name.replace('_', '-')}" if style == "cli" else name


# ====================================================================== kinds of values
class Kind:
    """A kind of option value. ``coerce``: a Python/JSON/TOML value → the stored value (raises
    ConfigTypeError); ``parse``: a command-line string → the value; ``check``: the range; ``valid``: the
    valid values in words; ``type_text``: the type in words (TOML errors); ``show``: a value in help."""

    type_text = "a value"
    valid = "a value"
    accepts_text = False  # coerce takes a string form as well (e.g. hidden "32,16")

    def coerce(self, value):
        return value

    def parse(self, text: str):
        return self.coerce(text)

    def check(self, value) -> bool:
        return True

    def show(self, value) -> str:
        if value is None:
            return "none"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (list, tuple)):
            return ",".join(self.show(v) for v in value)
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)

    def plain(self, value):
        """The value as JSON holds it (tuples become lists)."""
        if isinstance(value, tuple):
            return [self.plain(v) for v in value]
        return value


def _none_word(text: str) -> bool:
    return text.strip().lower() in ("none", "null", "")


@dataclasses.dataclass(frozen=True)
class Int(Kind):
    low: int | None = None
    high: int | None = None
    optional: bool = False  # None is a value (e.g. full batch)
    type_text = "an integer"

    @property
    def valid(self) -> str:
        bounds = [b for b in (f"at least {self.low}" if self.low is not None else "",
                              f"at most {self.high}" if self.high is not None else "") if b]
        text = f"{' and '.join(bounds)} (a whole number)" if bounds else "a whole number"
        return text + (", or none" if self.optional else "")

    def coerce(self, value):
        if value is None and self.optional:
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ConfigTypeError
        return int(value)

    def parse(self, text: str):
        if self.optional and _none_word(text):
            return None
        try:
            return int(text.strip())
        except ValueError:
            raise ConfigTypeError from None

    def check(self, value) -> bool:
        return value is None or ((self.low is None or value >= self.low) and (self.high is None or value <= self.high))


@dataclasses.dataclass(frozen=True)
class Float(Kind):
    low: float | None = None
    high: float | None = None
    low_open: bool = False   # low excluded
    high_open: bool = True   # high excluded
    optional: bool = False
    type_text = "a number"

    @property
    def valid(self) -> str:
        if self.low is not None and self.high is not None:
            text = f"a number in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        elif self.low is not None:
            text = f"a number {'>' if self.low_open else '>='} {self.low:g}"
        else:
            text = "a finite number"
        return text + (" (or none)" if self.optional else "")

    def coerce(self, value):
        if value is None and self.optional:
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigTypeError
        return float(value)

    def parse(self, text: str):
        if self.optional and _none_word(text):
            return None
        try:
            return float(text.strip())
        except ValueError:
            raise ConfigTypeError from None

    def check(self, value) -> bool:
        if value is None:
            return True
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)


@dataclasses.dataclass(frozen=True)
class Choice(Kind):
    choices: tuple[str, ...] = ()
    type_text = "a string"
    accepts_text = True

    @property
    def valid(self) -> str:
        return "one of " + ", ".join(self.choices)

    def coerce(self, value):
        if not isinstance(value, str):
            raise ConfigTypeError
        return value

    def parse(self, text: str):
        return text.strip()

    def check(self, value) -> bool:
        return value in self.choices


@dataclasses.dataclass(frozen=True)
class Sigmoid(Kind):
    """A sigmoid approximation spec (hetrain.circuits.approx.get_sigmoid); ``degree``: required degree."""

    degree: int | None = None
    type_text = "a string"
    accepts_text = True

    @property
    def valid(self) -> str:
        if self.degree is not None:
            return f"'deg{self.degree}:<B>' such as deg{self.degree}:16 (a degree-{self.degree} approximation)"
        return "'published' or 'deg<D>:<B>' such as deg5:12 (degree D in 1..31 on [-B, B])"

    def coerce(self, value):
        if not isinstance(value, str):
            raise ConfigTypeError
        return value

    def parse(self, text: str):
        return text.strip()

    def check(self, value) -> bool:
        from hetrain.circuits.approx import get_sigmoid

        try:
            approx = get_sigmoid(value)
        except ValueError:
            return False
        return self.degree is None or approx.degree == self.degree


@dataclasses.dataclass(frozen=True)
class Bool(Kind):
    type_text = "true or false"
    valid = "true or false"

    def coerce(self, value):
        if not isinstance(value, (bool,)) and type(value).__name__ != "bool_":  # numpy.bool_ too
            raise ConfigTypeError
        return bool(value)

    def parse(self, text: str):
        word = text.strip().lower()
        if word in ("true", "yes", "on", "1"):
            return True
        if word in ("false", "no", "off", "0"):
            return False
        raise ConfigTypeError


@dataclasses.dataclass(frozen=True)
class IntList(Kind):
    """Whole numbers (hidden widths): a list, a tuple, an array, one int, or "32,16"."""

    low: int = 1
    min_len: int = 1
    max_len: int | None = None
    example: str = "32,16"
    type_text = "a list of whole numbers"
    accepts_text = True

    @property
    def valid(self) -> str:
        if self.max_len == 1:
            return f"one whole number of at least {self.low}, such as {self.example}"
        return (f"comma-separated whole numbers of at least {self.low}, such as {self.example}"
                + (f" (at most {self.max_len})" if self.max_len else ""))

    def coerce(self, value):
        if isinstance(value, str):
            return self.parse(value)
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return (int(value),)
        try:
            items = list(value.tolist() if hasattr(value, "tolist") else value)
        except TypeError:
            raise ConfigTypeError from None
        items = items if isinstance(items, list) else [items]
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in items):
            raise ConfigTypeError
        return tuple(int(v) for v in items)

    def parse(self, text: str):
        try:
            return tuple(int(h) for h in text.split(",") if h.strip())
        except ValueError:
            raise ConfigTypeError from None

    def check(self, value) -> bool:
        return (len(value) >= self.min_len and (self.max_len is None or len(value) <= self.max_len)
                and all(v >= self.low for v in value))


@dataclasses.dataclass(frozen=True)
class SigmoidList(Kind):
    """One sigmoid spec per weight layer, or None (all layers use ``sigmoid``)."""

    type_text = "a list of sigmoid specs"
    valid = "comma-separated sigmoid specs such as deg3:16,published, one per weight layer (or none)"
    accepts_text = True

    def coerce(self, value):
        if value is None:
            return None
        if isinstance(value, str):
            return self.parse(value)
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigTypeError
        return tuple(value)

    def parse(self, text: str):
        if _none_word(text):
            return None
        return tuple(s.strip() for s in text.split(",") if s.strip())

    def check(self, value) -> bool:
        return value is None or (len(value) >= 1 and all(Sigmoid().check(v) for v in value))


@dataclasses.dataclass(frozen=True)
class Matrix(Kind):
    """A finite matrix of numbers as nested lists, or None (the client's input projection)."""

    type_text = "a matrix (list of lists of numbers)"
    valid = "a finite components x features matrix of numbers (or none)"

    def coerce(self, value):
        if value is None:
            return None
        if not isinstance(value, (list, tuple)) or not value or not all(isinstance(r, (list, tuple)) for r in value):
            raise ConfigTypeError
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for r in value for v in r):
            raise ConfigTypeError
        return tuple(tuple(float(v) for v in r) for r in value)

    def parse(self, text: str):
        raise ConfigTypeError

    def check(self, value) -> bool:
        return value is None or (len({len(r) for r in value}) == 1 and len(value[0]) >= 1
                                 and all(math.isfinite(v) for r in value for v in r))


@dataclasses.dataclass(frozen=True)
class Beta(Kind):
    """Heavy-ball momentum: "none" or β in [0, 1)."""

    type_text = "'none' or a number"
    valid = "'none' or a number β in [0, 1) (heavy-ball momentum, e.g. 0.9)"
    accepts_text = True

    def coerce(self, value):
        if isinstance(value, str):
            return self.parse(value)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigTypeError
        return float(value)

    def parse(self, text: str):
        if text.strip() == "none":
            return "none"
        try:
            return float(text.strip())
        except ValueError:
            raise ConfigTypeError from None

    def check(self, value) -> bool:
        return value == "none" or (isinstance(value, float) and 0.0 <= value < 1.0)


# ====================================================================== fields
@dataclasses.dataclass(frozen=True)
class Option:
    """The metadata of one config field (see the module docstring)."""

    kind: Kind
    help: str
    user: bool = True                  # a user sets it (CLI, estimators, --config); else planner/protocol only
    planned: bool = False              # fit and the estimators choose it on the data when not given
    job_option: str | None = None      # a bound of the job (protocol.fit keyword), not the trainer's value
    default_text: str | Callable[[], str] | None = None  # the default as a user meets it, when not the field's

    def default_words(self, default) -> str:
        if self.default_text is not None:
            return self.default_text() if callable(self.default_text) else self.default_text
        return ("planned on the data" + (f" (the trainer alone: {self.kind.show(default)})" if default is not None else "")
                if self.planned else self.kind.show(default))


def option(default, kind: Kind, help: str, **meta) -> Any:
    """A config field: ``default`` (immutable: tuples for lists), its ``kind`` and ``help`` (Option)."""
    return dataclasses.field(default=default, metadata={"hetrain": Option(kind, help, **meta)})


def accept(trainer: str, name: str, opt: Option, value, style: str = "python"):
    """``value`` of option ``name`` checked and normalised by ``opt``: a command line's string is parsed
    (``style`` "cli"); a Python, JSON or TOML value must have the field's type (a string only where
    the kind takes one, e.g. hidden "32,16"). OptionTypeError / OptionRangeError naming the option
    and the valid values."""
    try:
        value = opt.kind.parse(value) if style == "cli" and isinstance(value, str) else opt.kind.coerce(value)
    except ConfigTypeError:
        raise OptionTypeError(trainer, name, f"must be {opt.kind.valid}, got {_shown(value)}", style) from None
    if not opt.kind.check(value):
        raise OptionRangeError(trainer, name, f"must be {opt.kind.valid}, got {_shown(value)}", style)
    return value


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
        return {f.name: f.metadata["hetrain"].kind.plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _max_epochs_text() -> str:
    from hetrain.models.minibatch_plan import DEFAULT_MAX_EPOCHS

    return f"{DEFAULT_MAX_EPOCHS} (the planner and early stopping usually end sooner)"


def _batch_sizes_text() -> str:
    from hetrain.models.minibatch_plan import BATCH_SIZES

    return f"planned among {', '.join(map(str, BATCH_SIZES))} (the trainer alone: 128)"


def _patience_text() -> str:
    from hetrain.models.minibatch_plan import DEFAULT_PATIENCE

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
    """mlr with refresh: mini-batch epochs (models/minibatch.py), planned by models/minibatch_plan.py."""

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
    """The network with the double Volley Revolver packing (models/mlp.py, "mlp-dvr")."""

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
