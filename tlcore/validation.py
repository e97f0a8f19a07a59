"""Parameter constraints in the style of scikit-learn's ``_param_validation``.

Each spec declares a table ``{field: [constraint, ...]}``; a value is valid when any constraint
accepts it. The check and the error message come from the same objects, so they cannot drift:

    The 'learning_rate' parameter of FineTuningParams must be a float in the range (0, inf).
    Got -1 instead.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tlcore.errors import SpecError


class Constraint:
    def is_satisfied_by(self, value: Any) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class Interval(Constraint):
    """A number in a range; ``kind`` is ``int`` or ``float`` (ints are accepted as floats)."""

    kind: type
    low: float | None
    high: float | None
    closed: str = "both"  # "both", "left", "right", "neither"

    def is_satisfied_by(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if self.kind is int and not isinstance(value, numbers.Integral):
            return False
        if not isinstance(value, numbers.Real) or math.isnan(value):
            return False
        low_open = self.closed in ("right", "neither")
        high_open = self.closed in ("left", "neither")
        if self.low is not None and (value < self.low or (value == self.low and low_open)):
            return False
        return not (self.high is not None and (value > self.high or (value == self.high and high_open)))

    def describe(self) -> str:
        kind = "an int" if self.kind is int else "a float"
        left = "[" if self.closed in ("both", "left") and self.low is not None else "("
        right = "]" if self.closed in ("both", "right") and self.high is not None else ")"
        low = "-inf" if self.low is None else _fmt(self.low)
        high = "inf" if self.high is None else _fmt(self.high)
        return f"{kind} in the range {left}{low}, {high}{right}"


@dataclass(frozen=True)
class Options(Constraint):
    """One of a fixed set of values."""

    options: tuple

    def __init__(self, options: Iterable) -> None:
        object.__setattr__(self, "options", tuple(options))

    def is_satisfied_by(self, value: Any) -> bool:
        return any(value == o and type(value) is type(o) for o in self.options)

    def describe(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.options)


@dataclass(frozen=True)
class InstanceOf(Constraint):
    kind: type
    label: str

    def is_satisfied_by(self, value: Any) -> bool:
        if self.kind in (int, float) and isinstance(value, bool):
            return False
        return isinstance(value, self.kind)

    def describe(self) -> str:
        return self.label


@dataclass(frozen=True)
class IsNone(Constraint):
    def is_satisfied_by(self, value: Any) -> bool:
        return value is None

    def describe(self) -> str:
        return "None"


@dataclass(frozen=True)
class Check(Constraint):
    """A predicate with its own description, for the odd rule no table entry expresses."""

    predicate: Callable[[Any], bool]
    label: str

    def is_satisfied_by(self, value: Any) -> bool:
        try:
            return bool(self.predicate(value))
        except Exception:
            return False

    def describe(self) -> str:
        return self.label


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def describe_all(constraints: list[Constraint]) -> str:
    parts = [c.describe() for c in constraints]
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " or " + parts[-1]


def validate_params(owner: str, values: Mapping[str, Any], table: Mapping[str, list[Constraint]]) -> None:
    """Raise :class:`SpecError` for the first value that no constraint of its field accepts."""
    for name, constraints in table.items():
        if name not in values:
            continue
        value = values[name]
        if any(c.is_satisfied_by(value) for c in constraints):
            continue
        raise SpecError(
            f"The '{name}' parameter of {owner} must be {describe_all(constraints)}. Got {value!r} instead."
        )
