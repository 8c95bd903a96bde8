"""Argument validation: accepted values, refused values and their one-line messages."""

import re

import numpy as np
import pytest

from hyperspy_partialscan import paths
from hyperspy_partialscan._validation import (
    check_choice,
    check_number,
    check_path_size,
    check_seed,
    check_shape,
    validate_coverage,
)


def _raises(fn, *args, fragments, **kwargs):
    """Call ``fn``, expect a ValueError whose one-line message holds every fragment; return the message."""
    with pytest.raises(ValueError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# ------------------------------------------------------------------ check_number

POSITIVE = dict(low=0, low_inclusive=False)
UNIT = dict(low=0, high=1, low_inclusive=False)


@pytest.mark.parametrize(
    "value, kwargs, expected",
    [
        (0.5, {}, 0.5),
        (-3, {}, -3.0),
        (np.float32(0.25), UNIT, 0.25),
        (np.int64(2), POSITIVE, 2.0),
        (1, UNIT, 1.0),  # inclusive upper bound
        (0, dict(low=0), 0.0),  # inclusive lower bound
        (1e-300, POSITIVE, 1e-300),
        (5, dict(low=1, integer=True), 5),
        (np.uint8(7), dict(integer=True), 7),
        (None, dict(allow_none=True, **POSITIVE), None),
        (0.5, dict(high=1, high_inclusive=False), 0.5),
    ],
)
def test_check_number_accepts(value, kwargs, expected):
    out = check_number("x", value, **kwargs)
    assert out == expected
    assert type(out) is type(expected)  # plain Python float / int / None


@pytest.mark.parametrize(
    "value, kwargs, fragments",
    [
        (0, UNIT, ["coverage must be in (0, 1], got 0"]),
        (1.5, UNIT, ["coverage must be in (0, 1], got 1.5"]),
        (np.nan, UNIT, ["coverage must be in (0, 1], got nan"]),
        (np.float64(np.inf), UNIT, ["coverage must be in (0, 1], got inf"]),
        ("a lot", UNIT, ["coverage must be a number in (0, 1], not 'a lot'"]),
        ("0.5", UNIT, ["coverage must be a number in (0, 1], not '0.5'"]),
        (True, UNIT, ["coverage must be a number in (0, 1], not True"]),
        (np.bool_(True), UNIT, ["coverage must be a number"]),
        (None, UNIT, ["coverage must be a number in (0, 1], not None"]),
        ([0.5], UNIT, ["coverage must be a number", "[0.5]"]),
        (0, POSITIVE, ["coverage must be a finite number > 0, got 0"]),
        (-np.inf, dict(low=0), ["coverage must be a finite number >= 0, got -inf"]),
        (np.inf, POSITIVE, ["coverage must be a finite number > 0, got inf"]),
        (np.nan, {}, ["coverage must be a finite number, got nan"]),
        (2, dict(high=1, high_inclusive=False), ["coverage must be a finite number < 1, got 2"]),
        (1, dict(high=1, high_inclusive=False), ["< 1, got 1"]),
        (0, dict(low=0, high=1, low_inclusive=False, high_inclusive=False), ["in (0, 1), got 0"]),
        (2, dict(low=0, high=1), ["in [0, 1], got 2"]),
        (0, dict(allow_none=True, **POSITIVE), ["coverage must be a finite number > 0 or None, got 0"]),
        ("x", dict(allow_none=True, **UNIT), ["coverage must be a number in (0, 1] or None, not 'x'"]),
        (3.0, dict(low=1, integer=True), ["coverage must be an integer >= 1, not 3.0"]),
        (0, dict(low=1, integer=True), ["coverage must be an integer >= 1, got 0"]),
        (11, dict(low=0, high=10, integer=True), ["coverage must be in [0, 10], got 11"]),
        (np.zeros((20, 20)), {}, ["coverage must be a finite number, not array("]),
    ],
)
def test_check_number_refuses(value, kwargs, fragments):
    message = _raises(check_number, "coverage", value, fragments=fragments, **kwargs)
    assert len(message) < 160  # long reprs are shortened


# ------------------------------------------------------------------ validate_coverage


def test_validate_coverage_is_the_one_paths_exports():
    assert paths.validate_coverage is validate_coverage


@pytest.mark.parametrize("value", [1e-6, 0.05, 1, np.float32(0.5)])
def test_validate_coverage_accepts(value):
    assert validate_coverage(value) == float(value)


@pytest.mark.parametrize(
    "value, fragment",
    [
        (0, "coverage must be in (0, 1], got 0"),  # the CLI's message (tests/test_cli.py)
        (1.0001, "coverage must be in (0, 1], got 1.0001"),
        (np.nan, "coverage must be in (0, 1], got nan"),
        ("a lot", "coverage must be a number in (0, 1], not 'a lot'"),
        (True, "not True"),
    ],
)
def test_validate_coverage_refuses(value, fragment):
    _raises(validate_coverage, value, fragments=[fragment])


# ------------------------------------------------------------------ check_seed


@pytest.mark.parametrize("seed", [0, 7, 2**63 - 1, np.int64(5), np.uint64(2**63 - 1), None])
def test_check_seed_accepts(seed):
    out = check_seed(seed)
    if seed is None:
        assert out is None
    else:
        assert out == int(seed) and type(out) is int


@pytest.mark.parametrize(
    "seed, fragment",
    [
        (-1, "seed must be in [0, 2**63), got -1"),
        (2**63, "seed must be in [0, 2**63), got 9223372036854775808"),
        (2.5, "seed must be a non-negative integer or None, not 2.5"),
        (1.0, "seed must be a non-negative integer or None, not 1.0"),
        (True, "seed must be a non-negative integer or None, not True"),
        (np.bool_(False), "seed must be a non-negative integer or None"),
        ("3", "seed must be a non-negative integer or None, not '3'"),
    ],
)
def test_check_seed_refuses(seed, fragment):
    _raises(check_seed, seed, fragments=[fragment])


# ------------------------------------------------------------------ check_choice


@pytest.mark.parametrize("value", ["raster", "random", np.str_("random")])
def test_check_choice_accepts(value):
    assert check_choice("order", value, ("raster", "random")) == value


@pytest.mark.parametrize(
    "value, choices, fragment",
    [
        ("spiral", ("raster", "random"), "order must be 'raster' or 'random', not 'spiral'"),
        ("x", ("both", "rows", "columns"), "order must be 'both', 'rows' or 'columns', not 'x'"),
        ("b", ("a",), "order must be 'a', not 'b'"),
        ("RASTER", ("raster", "random"), "not 'RASTER'"),
        (None, ("raster", "random"), "not None"),
        (np.array(["raster", "random"]), ("raster", "random"), "order must be 'raster' or 'random', not array("),
    ],
)
def test_check_choice_refuses(value, choices, fragment):
    _raises(check_choice, "order", value, choices, fragments=[fragment])


# ------------------------------------------------------------------ check_shape and check_path_size


@pytest.mark.parametrize("shape, expected", [((64, 48), (64, 48)), ([1, 1], (1, 1)), (np.array([3, 5]), (3, 5))])
def test_check_shape_accepts(shape, expected):
    out = check_shape(shape)
    assert out == expected and all(type(n) is int for n in out)


@pytest.mark.parametrize("shape", [(0, 64), (64,), (8, 8, 8), (-4, 4), ()])
def test_check_shape_refuses(shape):
    _raises(check_shape, shape, fragments=["shape must be two positive integers, got"])


def test_check_path_size():
    limit = 64 * 10 * 20 + 10_000
    assert check_path_size("spiral", limit, (10, 20)) is None
    message = _raises(check_path_size, "spiral", limit + 1, (10, 20),
                      fragments=["the spiral path would have", "10x20 frame", f"(limit {limit})", "step or spacing"])
    assert re.search(r"have 2\.28e\+04 probe positions", message)
