"""argparse types that name what they expected: shared by the `appliance` subcommands."""
from __future__ import annotations

import argparse
import math


def int_arg(lo: int, hi: int | None, what: str):
    """An argparse type for an integer in [lo, hi], with a message naming the range."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value
    return parse


positive_int = int_arg(1, None, "a positive integer")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value
port = int_arg(0, 65535, "a TCP port 0-65535")
