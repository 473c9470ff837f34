"""Argument types the `crawl2chat` commands share: a bad value is argparse's one-line usage error."""

from __future__ import annotations

import argparse


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def whole_numbers(text: str) -> list[int]:
    """'2,3,4' or '1e5,4e5' → whole numbers (a token budget reads better in exponent form)."""
    try:
        numbers = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if not all(n.is_integer() for n in numbers):
        raise argparse.ArgumentTypeError(f"expected whole numbers, got {text!r}")
    return [int(n) for n in numbers]
