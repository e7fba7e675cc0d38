"""Words for a key's type and range, shared by the error messages and docs/config.md."""
from __future__ import annotations

import types
import typing
from typing import Any, Literal, Union

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo


def number(value: float) -> str:
    """600.0 -> 600, 0.5 -> 0.5: a bound as people write it."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def bounds(metadata: list[Any]) -> tuple[Any, Any]:
    """(lo, hi) from a field's annotated-types constraints, None where open."""
    lo = hi = None
    for m in metadata:
        if isinstance(m, FieldInfo):
            sub = bounds(m.metadata)
            lo = sub[0] if sub[0] is not None else lo
            hi = sub[1] if sub[1] is not None else hi
        elif isinstance(m, (annotated_types.Ge, annotated_types.Gt)):
            lo = m.ge if isinstance(m, annotated_types.Ge) else m.gt
        elif isinstance(m, (annotated_types.Le, annotated_types.Lt)):
            hi = m.le if isinstance(m, annotated_types.Le) else m.lt
    return lo, hi


def _range(lo: Any, hi: Any) -> str:
    if lo is not None and hi is not None:
        return f" {number(lo)}–{number(hi)}"
    if lo is not None:
        return f" ≥ {number(lo)}"
    if hi is not None:
        return f" ≤ {number(hi)}"
    return ""


def unwrap(tp: Any) -> tuple[Any, list[Any]]:
    """The type inside Annotated[...] and its metadata."""
    metadata: list[Any] = []
    while typing.get_origin(tp) is typing.Annotated:
        args = typing.get_args(tp)
        tp, metadata = args[0], metadata + list(args[1:])
    return tp, metadata


def is_model(tp: Any) -> bool:
    """A pydantic model class (not list[...]: that is a `type` too on Python 3.10)."""
    return isinstance(tp, type) and typing.get_origin(tp) is None and issubclass(tp, BaseModel)


def is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def members(tp: Any) -> list[Any]:
    """The members of a union other than None."""
    return [a for a in typing.get_args(tp) if a is not type(None)]


def describe(tp: Any, metadata: list[Any] | None = None, markdown: bool = True) -> str:
    """`auto` | integer 1–64, number 0.5–600, list of strings, ..."""
    tp, inner = unwrap(tp)
    metadata = list(metadata or []) + inner
    code = (lambda v: f"`{v}`") if markdown else str
    if is_union(tp):
        parts = [describe(a, metadata if len(members(tp)) == 1 else None, markdown) for a in members(tp)]
        return (r" \| " if markdown else " or ").join(parts)
    if typing.get_origin(tp) is Literal:
        return (r" \| " if markdown else " or ").join(code(v) for v in typing.get_args(tp))
    if tp is bool:
        return "bool"
    if tp is int:
        return "integer" + _range(*bounds(metadata))
    if tp is float:
        return "number" + _range(*bounds(metadata))
    if tp is str or tp is SecretStr:
        return "string"
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        item, _ = unwrap(item)
        if is_model(item):
            return "list"
        return "list of " + {"string": "strings"}.get(describe(item, None, markdown), describe(item, None, markdown))
    if is_model(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def is_secret(tp: Any) -> bool:
    tp, _ = unwrap(tp)
    if is_union(tp):
        return any(is_secret(a) for a in members(tp))
    return tp is SecretStr
