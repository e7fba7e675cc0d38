"""Query parameters of the API, checked one by one: a bad one is a 400 naming it.

Each parser takes the raw text and raises BadParam with a message that says which
parameter, what was expected and what came.
"""
from __future__ import annotations

import math
import re
from typing import Callable, Mapping

from appliance.times import parse_time


class BadParam(ValueError):
    """A query parameter the API cannot use; its message names the parameter."""


def time_value(name: str, text: str) -> float:
    """Unix seconds, or an ISO 8601 time (local time of the device when no zone is given)."""
    try:
        value = parse_time(text)
    except ValueError:
        raise BadParam(f"{name}: expected unix seconds or an ISO 8601 time, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise BadParam(f"{name}: expected a time after 1970, got {text!r}")
    return value


def int_value(name: str, text: str, lo: int, hi: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise BadParam(f"{name}: expected an integer, got {text!r}") from None
    if not lo <= value <= hi:
        raise BadParam(f"{name}: must be between {lo} and {hi}, got {value}")
    return value


def name_value(name: str, text: str, max_len: int = 64) -> str:
    if not text or len(text) > max_len or not text.isprintable():
        raise BadParam(f"{name}: expected a name of 1 to {max_len} printable characters, got {text[:80]!r}")
    return text


_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def token_value(name: str, text: str, max_len: int = 32) -> str:
    """A one-word name such as a classifier's type (car, pickup, emergency): letters, digits,
    and `_ . -` after the first character."""
    if len(text) > max_len or not _TOKEN.fullmatch(text):
        raise BadParam(f"{name}: expected a type name of 1 to {max_len} letters, digits, '_', '.' or '-', "
                       f"got {text[:80]!r}")
    return text


def choice_value(name: str, text: str, choices: tuple[str, ...]) -> str:
    if text not in choices:
        raise BadParam(f"{name}: must be one of {', '.join(choices)}, got {text[:80]!r}")
    return text


Parser = Callable[[str, str], object]


def parse(args: Mapping[str, str], spec: dict[str, Parser]) -> dict[str, object]:
    """Parse the parameters in `spec` (name -> parser); unknown names are an error too, so a
    misspelt filter is not silently ignored. An empty value counts as not given."""
    unknown = sorted(set(args) - set(spec))
    if unknown:
        raise BadParam(f"{unknown[0]}: unknown parameter (valid: {', '.join(spec)})")
    out: dict[str, object] = {name: None for name in spec}
    for name, parser in spec.items():
        text = args.get(name, "")
        if text != "":
            out[name] = parser(name, text)
    return out
