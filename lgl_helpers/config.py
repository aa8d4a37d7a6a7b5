"""The base of every notebook's config and the parameter rules they share.

Each notebook builds one config from its parameters cell (``Cfg.from_parameters(globals())``); the
config checks itself once, when built, so everything below it trusts its typed values. A rule that
several configs (or a public library function) share has exactly one validator here, with one
message that names the parameter. Every config refuses a non-boolean for a boolean field (``"false"``
is a truthy string), and :meth:`NotebookConfig.from_mapping` (``lgl-kit train --params``) refuses
names that are no field, suggesting the closest one (:func:`unknown_name`), as ``--set`` does.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

# Stage I's methods (notebook 01's stage1_method) and how tables and reports name them; DINO's model is its teacher.
STAGE1_METHOD_NAMES = {"contrastive_aat": "contrastive + AAT", "dino": "DINO teacher"}


@dataclass
class NotebookConfig:
    """Base of the notebook configs: field names equal the notebook's parameters cell."""

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_parameters(cls, namespace: Mapping[str, Any]):
        """The config from a parameters cell's globals (extra names in ``namespace`` are ignored)."""
        return cls(**{name: namespace[name] for name in cls.field_names()})

    @classmethod
    def from_mapping(cls, params: Mapping[str, Any], ignored: tuple[str, ...] = ()):
        """The config from a mapping of parameters (a params file); a key that is neither a field nor in
        ``ignored`` raises ValueError naming it and the closest field."""
        names = cls.field_names()
        for key in params:
            if key not in names and key not in ignored:
                raise ValueError(unknown_name(key, names, f"{key!r} is not a parameter of {cls.__name__}"))
        return cls(**{name: params[name] for name in names if name in params})

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.type in ("bool", bool):
                check_bool(self.name_of(f.name), getattr(self, f.name))
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first parameter out of range; subclasses add their rules."""

    def name_of(self, field_name: str) -> str:
        """``Class.field``: how messages name a parameter, so the notebook it comes from is clear."""
        return f"{type(self).__name__}.{field_name}"


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def unknown_name(name: str, valid, problem: str, list_valid: bool = False) -> str:
    """The message for an unknown parameter ``name``: ``<problem>; did you mean '<closest>'?`` (the closest of
    ``valid`` by spelling), then, with ``list_valid`` or when none is close, the valid names."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    hints = [f"did you mean {close[0]!r}?"] if close else []
    if list_valid or not close:
        hints.append(f"valid names: {valid}")
    return f"{problem}; {' '.join(hints)}"


def check(name: str, value: Any, ok: bool, rule: str) -> None:
    """The one message of every parameter rule: ``<name>=<value> must be <rule>``."""
    if not ok:
        raise ValueError(f"{name}={value!r} must be {rule}")


def check_int(name: str, value: Any, minimum: int = 0, rule: str | None = None) -> int:
    """An integer ≥ ``minimum``; ``rule`` words what the bound means (e.g. ``">= 0 (0 = no limit)"``)."""
    check(name, value, _is_int(value) and value >= minimum, rule or f"an integer >= {minimum}")
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    """True or False itself: the string ``"false"`` is truthy, and 0/1 say less than they seem to."""
    check(name, value, isinstance(value, (bool, np.bool_)), "true or false (a boolean, not a string or number)")
    return bool(value)


def check_positive(name: str, value: Any) -> float:
    """A finite number > 0 (learning rates, budgets in seconds)."""
    check(name, value, _is_number(value) and math.isfinite(value) and value > 0, "a finite number > 0")
    return float(value)


def check_non_negative(name: str, value: Any, rule: str = "a finite number >= 0") -> float:
    check(name, value, _is_number(value) and math.isfinite(value) and value >= 0, rule)
    return float(value)


def check_fraction(name: str, value: Any) -> float:
    """A number in (0, 1] (decay factors)."""
    check(name, value, _is_number(value) and 0 < value <= 1, "in (0, 1]")
    return float(value)


def check_choice(name: str, value: Any, choices) -> Any:
    check(name, value, value in tuple(choices), f"one of {list(choices)}")
    return value


def check_channels(name: str, value: Any, allow_zero: bool = False) -> int:
    """An ECAPA-TDNN width: a positive multiple of 8 (Res2Net splits C into 8 branches); 0 where allowed."""
    ok = _is_int(value) and ((allow_zero and value == 0) or (value >= 8 and value % 8 == 0))
    check(name, value, ok, ("0 (keep the Stage I width) or " if allow_zero else "") + "a positive multiple of 8")
    return int(value)


def check_gate(value: Any, name: str = "gate") -> float:
    """A loss gate: a finite number ≥ 0 (a per-sample cross-entropy never goes below 0)."""
    check(name, value, _is_number(value) and math.isfinite(value) and value >= 0, "a finite number >= 0")
    return float(value)


def check_n_clusters(value: Any, n_items: int | None = None, name: str = "n_clusters", source: str = "") -> int:
    """A k-means cluster count: an integer ≥ 2 (one cluster gives one pseudo speaker, no classes to tell
    apart) and, when ``n_items`` is known, at most the ``n_items`` utterances (``source``: where they come from).
    """
    check(name, value, _is_int(value) and value >= 2, "an integer >= 2")
    if n_items is not None and value > n_items:
        where = f" in {source}" if source else ""
        raise ValueError(f"{name}={value} is larger than the number of utterances N={n_items}{where}")
    return int(value)
