"""Argument validation shared by the package: one-line errors that name the parameter.

Every checker returns the validated value (converted to a plain Python type)
or raises :class:`ValueError` with a single-line message naming the parameter,
what it must be and what was given.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

__all__ = ["check_number", "check_seed", "seed_or_fresh", "check_choice", "check_method_arguments", "check_shape",
           "check_path_size", "validate_coverage"]


def _show(value: object) -> str:
    """A short, one-line rendering of a value for an error message."""
    text = str(value) if isinstance(value, numbers.Number) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= 80 else text[:77] + "..."


def _bounds_text(low, high, low_inclusive, high_inclusive) -> str:
    """``"in (0, 1]"``, ``"> 0"``, ``"<= 3"`` or ``""`` for the given bounds."""
    if low is not None and high is not None:
        return f"in {'[' if low_inclusive else '('}{low}, {high}{']' if high_inclusive else ')'}"
    if low is not None:
        return f"{'>=' if low_inclusive else '>'} {low}"
    if high is not None:
        return f"{'<=' if high_inclusive else '<'} {high}"
    return ""


def check_number(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    integer: bool = False,
    allow_none: bool = False,
) -> float | int | None:
    """Validate a finite real (or integer) parameter within optional bounds.

    Parameters
    ----------
    name : str
        Parameter name, for the message.
    value : object
        The value given. Python and NumPy real numbers are accepted; bools,
        strings and other objects are not.
    low, high : float, optional
        Bounds of the allowed range (None: unbounded on that side).
    low_inclusive, high_inclusive : bool
        Whether each bound itself is allowed.
    integer : bool
        Require an integer (``3.0`` is refused) and return an ``int``.
    allow_none : bool
        Accept ``None`` (returned as is).

    Returns
    -------
    float or int or None
        ``float(value)`` (``int(value)`` with ``integer=True``), or None.

    Raises
    ------
    ValueError
        If ``value`` is not a number (or not an integer), is NaN or infinite,
        or lies outside the range. The message is one line, e.g.
        ``"coverage must be in (0, 1], got nan"`` or
        ``"step must be a finite number > 0, not 'far'"``.

    Examples
    --------
    >>> check_number("coverage", 0.25, low=0, high=1, low_inclusive=False)
    0.25
    >>> check_number("repeats", 3, low=1, integer=True)
    3
    >>> check_number("dose", None, low=0, low_inclusive=False, allow_none=True) is None
    True
    >>> check_number("coverage", float("nan"), low=0, high=1, low_inclusive=False)
    Traceback (most recent call last):
    ...
    ValueError: coverage must be in (0, 1], got nan
    >>> check_number("step", "far", low=0, low_inclusive=False)
    Traceback (most recent call last):
    ...
    ValueError: step must be a finite number > 0, not 'far'
    >>> check_number("flag", True)
    Traceback (most recent call last):
    ...
    ValueError: flag must be a finite number, not True
    """
    if value is None and allow_none:
        return None
    bounds = _bounds_text(low, high, low_inclusive, high_inclusive)
    two_sided = low is not None and high is not None
    kind = "integer" if integer else "number" if two_sided else "finite number"
    if two_sided:
        wanted, typed = bounds, f"{'an' if integer else 'a'} {kind} {bounds}"
    else:
        wanted = typed = f"{'an' if integer else 'a'} {kind}" + (f" {bounds}" if bounds else "")
    none = " or None" if allow_none else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral if integer else numbers.Real):
        raise ValueError(f"{name} must be {typed}{none}, not {_show(value)}")
    v = int(value) if integer else float(value)
    out_of_range = (
        (not integer and not math.isfinite(v))
        or (low is not None and (v < low if low_inclusive else v <= low))
        or (high is not None and (v > high if high_inclusive else v >= high))
    )
    if out_of_range:
        raise ValueError(f"{name} must be {wanted}{none}, got {_show(value)}")
    return v


def validate_coverage(coverage: object) -> float:
    """Return ``coverage`` as a float, or raise ValueError unless it is in (0, 1].

    Parameters
    ----------
    coverage : object
        Requested fraction of sampled pixels.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``coverage`` is not a real number in (0, 1].

    Examples
    --------
    >>> validate_coverage(0.05)
    0.05
    >>> validate_coverage(2)
    Traceback (most recent call last):
    ...
    ValueError: coverage must be in (0, 1], got 2
    """
    return check_number("coverage", coverage, low=0, high=1, low_inclusive=False)


def check_seed(seed: object) -> int | None:
    """Validate a user seed: None or an integer in [0, 2**63).

    Parameters
    ----------
    seed : object
        The seed given.

    Returns
    -------
    int or None
        The seed as a Python ``int``, or None.

    Raises
    ------
    ValueError
        Unless ``seed`` is None or an integer (not a bool) in [0, 2**63).

    Examples
    --------
    >>> check_seed(7)
    7
    >>> check_seed(None) is None
    True
    >>> check_seed(-1)
    Traceback (most recent call last):
    ...
    ValueError: seed must be in [0, 2**63), got -1
    >>> check_seed(2.5)
    Traceback (most recent call last):
    ...
    ValueError: seed must be a non-negative integer or None, not 2.5
    """
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be a non-negative integer or None, not {seed!r}")
    seed = int(seed)
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be in [0, 2**63), got {seed}")
    return seed


def seed_or_fresh(seed: object) -> int:
    """A user seed checked (:func:`check_seed`), or a fresh random one for None.

    Returns
    -------
    int
        In [0, 2**63), so it fits the int64 of saved metadata (recorded, the
        run can be repeated).

    Examples
    --------
    >>> seed_or_fresh(7)
    7
    >>> 0 <= seed_or_fresh(None) < 2**63
    True
    """
    if seed is None:
        import numpy as np

        return int(np.random.SeedSequence().entropy % (2**63))
    return check_seed(seed)


def check_choice(name: str, value: object, choices: Iterable[str]) -> object:
    """Validate that ``value`` is one of ``choices``.

    Parameters
    ----------
    name : str
        Parameter name, for the message.
    value : object
        The value given.
    choices : iterable of str
        The allowed values, in the order the message lists them.

    Returns
    -------
    object
        ``value``.

    Raises
    ------
    ValueError
        If ``value`` is not one of ``choices``.

    Examples
    --------
    >>> check_choice("order", "raster", ("raster", "random"))
    'raster'
    >>> check_choice("directions", "x", ("both", "rows", "columns"))
    Traceback (most recent call last):
    ...
    ValueError: directions must be 'both', 'rows' or 'columns', not 'x'
    """
    choices = tuple(choices)
    if not any(value is c or (isinstance(value, str) and value == c) for c in choices):
        listed = ", ".join(repr(c) for c in choices[:-1])
        listed = f"{listed} or {choices[-1]!r}" if listed else repr(choices[-1])
        raise ValueError(f"{name} must be {listed}, not {_show(value)}")
    return value


def check_method_arguments(method: str, **owners: dict[str, object]) -> None:
    """Refuse arguments that only another method uses, rather than ignore them.

    Parameters
    ----------
    method : str
        The method chosen.
    **owners : dict
        For each method with arguments of its own, ``{name: value}`` of those
        arguments; a value of None counts as not given.

    Raises
    ------
    ValueError
        One line naming the arguments given and the method that uses them.

    Examples
    --------
    >>> check_method_arguments("linear", generator={"model": None, "network_batch_size": None})
    >>> check_method_arguments("linear", generator={"model": "default", "network_batch_size": 2})
    Traceback (most recent call last):
    ...
    ValueError: model= and network_batch_size= are only used by method='generator', not 'linear'
    """
    for owner, arguments in owners.items():
        given = [name for name, value in arguments.items() if value is not None]
        if given and method != owner:
            verb = "is" if len(given) == 1 else "are"
            raise ValueError(f"{'= and '.join(given)}= {verb} only used by method={owner!r}, not {method!r}")


def check_shape(shape: Iterable) -> tuple[int, int]:
    """Validate a frame shape: two positive integers (rows, columns).

    Parameters
    ----------
    shape : iterable
        The shape given; each entry is converted with ``int``.

    Returns
    -------
    tuple of int

    Raises
    ------
    ValueError
        If the shape does not have two entries, both at least 1.

    Examples
    --------
    >>> check_shape([64, 48])
    (64, 48)
    >>> check_shape((8, 8, 8))
    Traceback (most recent call last):
    ...
    ValueError: shape must be two positive integers, got (8, 8, 8)
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be two positive integers, got {shape}")
    return shape


def check_path_size(name: str, n: float, shape: tuple[int, int]) -> None:
    """Refuse scan paths with absurdly many positions (they would exhaust memory).

    Parameters
    ----------
    name : str
        Path name, for the message.
    n : float
        Number of positions the path would have.
    shape : tuple of int
        Frame shape (rows, columns).

    Raises
    ------
    ValueError
        If ``n`` exceeds 64 positions per pixel (plus 10 000).

    Examples
    --------
    >>> check_path_size("spiral", 1e5, (64, 64))
    >>> check_path_size("spiral", 1e6, (64, 64))
    Traceback (most recent call last):
    ...
    ValueError: the spiral path would have 1e+06 probe positions on a 64x64 frame (limit 272144); \
increase its step or spacing
    """
    limit = 64 * shape[0] * shape[1] + 10_000
    if n > limit:
        raise ValueError(
            f"the {name} path would have {n:.3g} probe positions on a {shape[0]}x{shape[1]} frame (limit "
            f"{limit}); increase its step or spacing"
        )
