"""Editing the YAML config file in place: one implementation for `appliance passwd` and the
dashboard's line and zone editor.

The file is read with ruamel.yaml's round-trip mode, so keys the edit does not touch, their
order, quoting and comments stay as they were. The edited text is validated like any config
before it replaces the file, and it replaces it atomically, keeping the file's permissions
and the previous file as `<name>.bak` (appliance/config/replace.py): a mistake or a power
cut never leaves a broken or half-written config.
"""
from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any, Callable

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.util import load_yaml_guess_indent

from appliance import config as config_mod
from appliance.config import Config
from appliance.config.loader import YamlProblem, parse_yaml, read_text
from appliance.config.replace import replace_config
from appliance.errors import ApplianceError

# One edit at a time in this process (two dashboard saves, say): each reads the file the
# other wrote, so neither change is lost.
_lock = threading.Lock()

Validate = Callable[[str, str], Config]


def _round_trip(text: str) -> YAML:
    rt = YAML()  # round-trip: keeps comments, key order and quoting
    rt.preserve_quotes = True
    rt.width = 4096  # long values (a password hash, a zone's points) stay on one line
    seq_offset = (load_yaml_guess_indent(text)[2] or 0) if text.strip() else 0
    # Mappings indented by 2; list dashes placed the way the file had them ("  - x" or "- x").
    rt.indent(mapping=2, sequence=2 + seq_offset, offset=seq_offset)
    return rt


def edit(path: Path, change: Callable[[CommentedMap], None], *, create: bool = False,
         validate: Validate | None = None) -> Config:
    """Apply change() to the top mapping of the YAML file at `path`, validate the result and
    write it atomically; returns the validated config.

    create: a missing file is made (as an empty mapping first), else it is an error.
    validate(text, origin) -> Config checks the whole new text (default: config.from_text).
    Any problem raises ApplianceError, its lines `<path>: key.path: message` like
    `appliance config check`, and leaves the file as it was.
    """
    path = Path(path)
    with _lock:
        try:
            text = read_text(path) if path.exists() or not create else ""
            parse_yaml(text)  # the loader's own checks and messages first (syntax, duplicate keys)
        except OSError as e:
            raise ApplianceError(f"config {path}: cannot read: {e.strerror or e}") from None
        except YamlProblem as e:
            raise ApplianceError("\n".join(f"{path}: {line}" for line in e.lines)) from None
        try:
            rt = _round_trip(text)
            data = rt.load(text) if text.strip() else None
        except YAMLError as e:
            raise ApplianceError(f"config {path}: invalid YAML: {e}") from None
        if data is None:
            data = CommentedMap()
        if not isinstance(data, dict):
            raise ApplianceError(f"{path}: expected a mapping at the top, got {type(data).__name__}")
        change(data)
        out = io.StringIO()
        rt.dump(data, out)
        new_text = out.getvalue()
        cfg = (validate or _from_text)(new_text, str(path))  # the whole file must still be valid
        replace_config(path, new_text)
        return cfg


def _from_text(text: str, origin: str) -> Config:
    return config_mod.from_text(text, origin)


def to_yaml(value: Any, flow_lists: bool = True) -> Any:
    """Plain JSON-like values as ruamel nodes: mappings in block style; lists of scalars and
    lists of lists (points: `[[0.1, 0.6], [0.9, 0.6]]`) in flow style, one line each."""
    if isinstance(value, dict):
        m = CommentedMap()
        for k, v in value.items():
            m[k] = to_yaml(v, flow_lists)
        return m
    if isinstance(value, (list, tuple)):
        s = CommentedSeq(to_yaml(v, flow_lists) for v in value)
        if flow_lists and all(not isinstance(v, dict) for v in value):
            s.fa.set_flow_style()
        return s
    return value


def same(node: Any, value: Any) -> bool:
    """Whether a loaded YAML node holds the same plain value (so it is kept as written)."""
    if isinstance(value, dict):
        return isinstance(node, dict) and node.keys() == value.keys() and all(
            same(node[k], v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return isinstance(node, (list, tuple)) and len(node) == len(value) and all(
            same(a, b) for a, b in zip(node, value))
    if isinstance(value, bool) or isinstance(node, bool):
        return isinstance(node, bool) and isinstance(value, bool) and node == value
    if isinstance(value, (int, float)):
        return isinstance(node, (int, float)) and node == value
    if isinstance(value, str):
        return isinstance(node, str) and str(node) == value
    return node is None and value is None
