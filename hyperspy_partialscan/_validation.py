"""Argument validation (temporary minimal version; replaced by the full module on merge)."""

from __future__ import annotations

import numbers
import math

__all__ = ["check_number"]


def check_number(name, value, *, low=None, high=None, low_inclusive=True, high_inclusive=True, integer=False,
                 allow_none=False):
    if value is None and allow_none:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok and low is not None:
        ok = value >= low if low_inclusive else value > low
    if ok and high is not None:
        ok = value <= high if high_inclusive else value < high
    if not ok:
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{name} must be {'an integer' if integer else 'a number'} in "
                         f"{'[' if low_inclusive and low is not None else '('}{lo}, {hi}"
                         f"{']' if high_inclusive and high is not None else ')'}, got {value!r}")
    return int(value) if integer else value
