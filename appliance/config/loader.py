"""Reading a config file into a Config, and writing one out.

Every problem in a file is reported at once, one line each, naming the file and the key:

    c.yaml: cameras[0].loop: expected true or false, got str 'yes please'
    c.yaml: detect.threshold: must be between 0.0 and 1.0, got 1.5

A file that is not YAML text (binary, UTF-16), nested absurdly deep, or with a key given
twice in one mapping is refused with a line that says so.

Files named in the config (video files, the model, TLS files) are checked when load() is
given the asset cache (`assets_dir`): `appliance run` and `appliance config check` do.
`files="warn"` (config check --no-files) reports the ones missing here as warnings.
"""
from __future__ import annotations

import logging
import os
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic.fields import FieldInfo

from appliance.config.base import FileCheck, FileMode, Problems, join_key
from appliance.config.describe import bounds, describe, is_model, is_secret, is_union, members, unwrap
from appliance.config.root import Config
from appliance.config.secrets import MASK, mask_secrets
from appliance.errors import ApplianceError

log = logging.getLogger("appliance.config")

MAX_DEPTH = 100  # nesting of YAML collections; a real config has 4
MAX_ERROR_LINES = 50


# -- YAML -------------------------------------------------------------------------------


class YamlProblem(Exception):
    """The text is not a YAML document we take; lines say why (with line numbers)."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses nesting deeper than MAX_DEPTH (PyYAML composes recursively)."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_MERGE = "tag:yaml.org,2002:merge"


def _duplicates(root: yaml.Node) -> list[str]:
    """`key: duplicate key (line N and again line M)` for every mapping with a key twice."""
    out: list[tuple[int, str]] = []
    seen_nodes: set[int] = set()  # aliases share nodes: visit each once
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], yaml.Mark] = {}
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.tag != _MERGE:
                    where = join_key(path, str(k.value))
                    mark = k.start_mark
                    if (k.tag, k.value) in first:
                        before = first[k.tag, k.value]
                        if before.line == mark.line:
                            lines = f"line {mark.line + 1}, columns {before.column + 1} and {mark.column + 1}"
                        else:
                            lines = f"line {before.line + 1} and again line {mark.line + 1}"
                        out.append((mark.line, f"{where}: duplicate key ({lines})"))
                    else:
                        first[k.tag, k.value] = mark
                    stack.append((v, where))
                else:
                    stack.append((v, path))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(node.value))
    return [text for _, text in sorted(out)]


def parse_yaml(text: str) -> Any:
    """One YAML document (safe types only). YamlProblem for syntax errors, nesting deeper
    than MAX_DEPTH and keys given twice in one mapping."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        dups = _duplicates(node)
        if dups:
            raise YamlProblem(dups)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise YamlProblem([f"{where}invalid YAML: {getattr(e, 'problem', None) or e}"]) from None
    except RecursionError:
        raise YamlProblem([f"invalid YAML: nested too deeply (at most {MAX_DEPTH} levels)"]) from None
    finally:
        loader.dispose()


def read_text(path: str | os.PathLike) -> str:
    """A YAML file's text. OSError when unreadable; YamlProblem when it is not UTF-8 text."""
    data = Path(path).read_bytes()
    head = data[:64]
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or (
            len(head) >= 4 and any(not any(head[i::2]) and all(head[1 - i::2]) for i in (0, 1))):
        # A byte-order mark, or ASCII text with every other byte NUL.
        raise YamlProblem(["not UTF-8 text: it looks like UTF-16 (save it as UTF-8)"])
    if b"\0" in data:
        raise YamlProblem(["not a text file (it holds NUL bytes): a config is UTF-8 YAML text"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise YamlProblem([f"not UTF-8 text: byte 0x{data[e.start]:02x} at offset {e.start} "
                           "(a binary file? a config is UTF-8 YAML text)"]) from None
    return text[1:] if text.startswith("\ufeff") else text


# -- errors -----------------------------------------------------------------------------


def _got(value: Any, secret: bool = False) -> str:
    """`str 'high'`, `float 2.5`, `list`: what was found, as the messages say it."""
    name = "null" if value is None else type(value).__name__
    if secret or isinstance(value, (dict, list, tuple, set)) or value is None:
        return name
    text = repr(value)
    return f"{name} {text if len(text) <= 80 else text[:77] + '...'}"


def _walk(loc: tuple) -> tuple[str, FieldInfo | None, type[BaseModel] | None, bool]:
    """The key path of a pydantic error location, the field it ends at, the model that
    field belongs to, and whether the location went through a union member."""
    tp: Any = Config
    field: FieldInfo | None = None
    parent: type[BaseModel] | None = None
    path, through_union = "", False
    for seg in loc:
        inner, _ = unwrap(tp)
        if is_union(inner) and len(members(inner)) == 1:  # Optional[X]
            inner, _ = unwrap(members(inner)[0])
        if isinstance(seg, int):
            path += f"[{seg}]"
            if typing.get_origin(inner) is list:
                tp, field = typing.get_args(inner)[0], None
            continue
        if is_model(inner):
            parent = inner
            field = inner.model_fields.get(seg)
            tp = field.annotation if field is not None else None
            path = join_key(path, seg)
            continue
        through_union = True  # a union member's tag, e.g. "literal['auto']", "constrained-int"
    return path, field, parent, through_union


def _range_message(field: FieldInfo | None, err: dict) -> str:
    lo, hi = bounds(field.metadata) if field is not None else (None, None)
    ctx = err.get("ctx") or {}
    if lo is None and hi is None:  # a bound inside the type (a union member)
        lo = ctx.get("ge", ctx.get("gt"))
        hi = ctx.get("le", ctx.get("lt"))
    value = err.get("input")
    if lo is not None and hi is not None:
        return f"must be between {lo} and {hi}, got {value}"
    if lo is not None:
        return f"must be at least {lo}, got {value}"
    return f"must be at most {hi}, got {value}"


def _message(err: dict, field: FieldInfo | None, parent: type[BaseModel] | None) -> str:
    t, value = err["type"], err.get("input")
    secret = field is not None and is_secret(field.annotation)
    got = _got(value, secret)
    if t == "missing":
        return "required key is missing"
    if t == "extra_forbidden":
        valid = ", ".join(parent.model_fields) if parent is not None else ""
        return f"unknown key (valid keys: {valid})"
    if t in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping, got {got}"
    if t in ("list_type", "tuple_type"):
        return f"expected a list, got {got}"
    if t == "bool_type":
        return f"expected true or false, got {got}"
    if t in ("int_type", "int_parsing", "int_from_float"):
        return f"expected an integer, got {got}"
    if t in ("float_type", "float_parsing"):
        return f"expected a number, got {got}"
    if t == "finite_number":
        return f"must be a finite number, got {value}"
    if t in ("string_type", "is_instance_of"):
        return f"expected a string, got {got}"
    if t == "literal_error" and field is not None:
        tp, _ = unwrap(field.annotation)
        return f"must be one of {', '.join(map(str, typing.get_args(tp)))}, got {value!r}"
    if t in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return _range_message(field, err)
    return err["msg"]


def error_lines(e: ValidationError) -> list[str]:
    """pydantic's errors as `key.path: message` lines, in the file's order."""
    lines: list[str] = []
    union_done: set[str] = set()
    for err in e.errors():
        path, field, parent, through_union = _walk(err["loc"])
        if err["type"] == Problems.TYPE:
            lines.extend(f"{join_key(path, sub)}: {msg}" if join_key(path, sub) else msg
                         for sub, msg in err["ctx"]["errors"])
            continue
        if through_union and field is not None:
            # One line for all the members that did not fit: "must be auto or integer 1–64".
            if path not in union_done:
                union_done.add(path)
                secret = is_secret(field.annotation)
                lines.append(f"{path}: expected {describe(field.annotation, field.metadata, markdown=False)}, "
                             f"got {_got(err.get('input'), secret)}")
            continue
        msg = _message(err, field, parent)
        lines.append(f"{path}: {msg}" if path else msg)
    return lines


def _raise(origin: str, lines: list[str]) -> typing.NoReturn:
    if len(lines) > MAX_ERROR_LINES:
        lines = lines[:MAX_ERROR_LINES] + [f"... and {len(lines) - MAX_ERROR_LINES} more"]
    raise ApplianceError("\n".join(f"{origin}: {line}" for line in lines))


# -- loading ----------------------------------------------------------------------------


def _context(assets_dir: str | os.PathLike | None, files: FileMode | None) -> dict | None:
    if files is None and assets_dir is None:
        return None
    if assets_dir is None:
        raise ValueError("file checks need the asset cache: give assets_dir")
    return {"files": FileCheck(Path(assets_dir), files or "error")}


def from_dict(data: Any, origin: str = "config", *, assets_dir: str | os.PathLike | None = None,
              files: FileMode | None = None, warnings: list[str] | None = None) -> Config:
    """Validate parsed YAML (None: all defaults). ApplianceError lists every problem.

    assets_dir (or files) turns on the checks of the files the config names; without
    them those are skipped. Warnings go to `warnings` when given, else to the log."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ApplianceError(f"{origin}: expected a mapping at the top, got {type(data).__name__}")
    context = _context(assets_dir, files)
    try:
        return Config.model_validate(data, context=context)
    except ValidationError as e:
        _raise(origin, error_lines(e))
    finally:  # the warnings of a file with errors too
        for k, msg in context["files"].warnings if context is not None else ():
            line = f"{origin}: {k}: {msg}"
            if warnings is not None:
                warnings.append(line)
            else:
                log.warning("config: %s", line)


def from_text(text: str, origin: str = "config", **kwargs: Any) -> Config:
    """from_dict() of YAML text."""
    try:
        data = parse_yaml(text)
    except YamlProblem as e:
        _raise(origin, e.lines)
    return from_dict(data, origin, **kwargs)


def load(path: str | os.PathLike | None, assets_dir: str | os.PathLike | None = None, *,
         files: FileMode | None = None, warnings: list[str] | None = None) -> Config:
    """Load and validate a YAML config file; None gives the built-in demo config.

    With assets_dir, the files the config names are checked too (see from_dict)."""
    if path is None:
        if assets_dir is None and files is None:
            return Config()
        return from_dict({}, "built-in config", assets_dir=assets_dir, files=files, warnings=warnings)
    p = Path(path)
    try:
        text = read_text(p)
    except OSError as e:
        raise ApplianceError(f"config {p}: cannot read: {e.strerror or e}") from None
    except YamlProblem as e:
        _raise(str(p), e.lines)
    return from_text(text, str(p), assets_dir=assets_dir, files=files, warnings=warnings)


# -- writing ----------------------------------------------------------------------------


def _plain(value: Any, secrets: bool) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value() if secrets else MASK
    if isinstance(value, dict):
        return {k: _plain(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, secrets) for v in value]
    return value


def to_dict(cfg: Config, secrets: bool = False) -> dict[str, Any]:
    """The config as plain Python values (what YAML or JSON can hold). Secrets
    (uplink.password, web.password_hash, passwords in camera URLs) are masked with MASK
    unless secrets=True; an unset secret is None either way."""
    data = _plain(cfg.model_dump(mode="python"), secrets)
    return data if secrets else mask_secrets(data)


def dump(cfg: Config, secrets: bool = False) -> str:
    """The config as YAML; load() reads it back to the same config (with secrets=True)."""
    return yaml.safe_dump(to_dict(cfg, secrets), sort_keys=False, allow_unicode=True)
