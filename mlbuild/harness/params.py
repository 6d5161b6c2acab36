"""Resolve and check a builder's parameters against its ``PARAMS`` table."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mlbuild.errors import InputError


def resolve(
    builder: str,
    spec: Mapping[str, Any],
    given: Mapping[str, Any],
    checks: Mapping[str, Callable[[Any], str | None]] | None = None,
) -> dict[str, Any]:
    """Fill defaults, reject unknown names, check types, choices and per-param ``checks``.

    ``spec`` maps names to :class:`mlbuild.builders.Param`; ``checks`` maps names to a function
    returning an error text (``"must be >= 0"``) or None.
    """
    unknown = sorted(set(given) - set(spec))
    if unknown:
        raise InputError(
            f"builder `{builder}`: unknown param `{unknown[0]}`; known: {', '.join(sorted(spec))}"
        )
    out: dict[str, Any] = {}
    for name, p in spec.items():
        if name in given:
            value = given[name]
        elif p.required:
            raise InputError(f"builder `{builder}`: param `{name}` is required")
        else:
            value = p.default
        if p.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (p.type is int and isinstance(value, bool)) or not isinstance(value, p.type):
            raise InputError(
                f"builder `{builder}`: param `{name}` must be {p.type.__name__}, "
                f"got {type(value).__name__} {value!r}"
            )
        if p.choices and value not in p.choices:
            raise InputError(
                f"builder `{builder}`: param `{name}` must be one of "
                f"{', '.join(repr(c) for c in p.choices)}, got {value!r}"
            )
        if checks and name in checks:
            problem = checks[name](value)
            if problem:
                raise InputError(f"builder `{builder}`: param `{name}` {problem}, got {value!r}")
        out[name] = value
    return out


def non_negative(value: Any) -> str | None:
    return "must be >= 0" if value < 0 else None


def positive(value: Any) -> str | None:
    return "must be > 0" if value <= 0 else None
