"""Argument types shared by the `grasp` commands: numbers are checked where they are typed."""

from __future__ import annotations

import argparse
import math


def seconds(text: str) -> float:
    """A finite number ≥ 0 (argparse type): `--wait nan` would wait forever, `--wait -1` never."""
    return _finite_at_least(text, 0.0)


def tolerance(text: str) -> float:
    """A finite number ≥ 0 (argparse type): NaN compares unequal to everything, so `--tolerance nan`
    would call every value a match, and a negative one would call every value different."""
    return _finite_at_least(text, 0.0)


def _finite_at_least(text: str, low: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < low:
        raise argparse.ArgumentTypeError(f"must be a finite number ≥ {low:g}, got {text!r}")
    return value
