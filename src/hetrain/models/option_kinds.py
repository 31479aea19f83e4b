"""The kinds of values a trainer option takes, the metadata of one option, and the errors of a bad value.

``Kind`` subclasses state a type, its valid range or choices in words, how a command-line string is
parsed (hidden ``"32,16"`` → ``[32, 16]``) and how a value shows in help; ``Option`` is one config
field's metadata; ``accept`` checks one value. The trainers' configs built from them are in
models/configs.py (see its docstring).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable, ClassVar

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
        """A Python, JSON or TOML ``value`` as the field stores it; ConfigTypeError for the wrong type."""
        return value

    def parse(self, text: str):
        """A command-line string as the field stores it; ConfigTypeError when it does not read as one."""
        return self.coerce(text)

    def check(self, value) -> bool:
        """Whether a stored value is in the valid range or among the choices (``valid`` says which)."""
        return True

    def show(self, value) -> str:
        """``value`` as help text and messages write it (none, true/false, 32,16, 0.9)."""
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


class _Number(Kind):
    """What Int and Float share: ``none`` where the field is optional, else a number of the kind's
    abstract type (``number``: numbers.Integral or numbers.Real; a bool is not one) made ``convert``."""

    number: ClassVar[type] = numbers.Real
    convert: ClassVar[type] = float
    optional = False  # a field of each subclass

    def coerce(self, value):
        if value is None and self.optional:
            return None
        if isinstance(value, bool) or not isinstance(value, self.number):
            raise ConfigTypeError
        return self.convert(value)

    def parse(self, text: str):
        if self.optional and _none_word(text):
            return None
        try:
            return self.convert(text.strip())
        except ValueError:
            raise ConfigTypeError from None


@dataclasses.dataclass(frozen=True)
class Int(_Number):
    """An integer in [lo, hi] (either bound optional)."""

    low: int | None = None
    high: int | None = None
    optional: bool = False  # None is a value (e.g. full batch)
    type_text = "an integer"
    number = numbers.Integral
    convert = int

    @property
    def valid(self) -> str:
        bounds = [b for b in (f"at least {self.low}" if self.low is not None else "",
                              f"at most {self.high}" if self.high is not None else "") if b]
        text = f"{' and '.join(bounds)} (a whole number)" if bounds else "a whole number"
        return text + (", or none" if self.optional else "")

    def check(self, value) -> bool:
        return value is None or ((self.low is None or value >= self.low) and (self.high is None or value <= self.high))


@dataclasses.dataclass(frozen=True)
class Float(_Number):
    """A real number in a range (bounds open or closed, either optional)."""

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

    def check(self, value) -> bool:
        if value is None:
            return True
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)


class _Text(Kind):
    """What Choice and Sigmoid share: a string (stripped on the command line), checked by the subclass."""

    type_text = "a string"
    accepts_text = True

    def coerce(self, value):
        if not isinstance(value, str):
            raise ConfigTypeError
        return value

    def parse(self, text: str):
        return text.strip()


@dataclasses.dataclass(frozen=True)
class Choice(_Text):
    """One of a fixed set of words (e.g. momentum none|nesterov)."""

    choices: tuple[str, ...] = ()

    @property
    def valid(self) -> str:
        return "one of " + ", ".join(self.choices)

    def check(self, value) -> bool:
        return value in self.choices


@dataclasses.dataclass(frozen=True)
class Sigmoid(_Text):
    """A sigmoid approximation spec (hetrain.circuits.approx.get_sigmoid); ``degree``: required degree."""

    degree: int | None = None

    @property
    def valid(self) -> str:
        if self.degree is not None:
            return f"'deg{self.degree}:<B>' such as deg{self.degree}:16 (a degree-{self.degree} approximation)"
        return "'published' or 'deg<D>:<B>' such as deg5:12 (degree D in 1..31 on [-B, B])"

    def check(self, value) -> bool:
        from hetrain.circuits.approx import get_sigmoid

        try:
            approx = get_sigmoid(value)
        except ValueError:
            return False
        return self.degree is None or approx.degree == self.degree


@dataclasses.dataclass(frozen=True)
class Bool(Kind):
    """true or false (the command line also takes yes/no, on/off, 1/0)."""

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
        """The default as help shows it: the field's own text, "planned on the data", or the value."""
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
