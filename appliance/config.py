"""One typed config, validated when it loads.

The YAML file maps onto the dataclasses below. Unknown keys, wrong types and values out
of range are errors that name the file and the key's path ("cameras[0].loop: expected
true or false, got 'yes please'"). Anything left out takes the default written here, so
an empty file (or no file) is the built-in demo: the demo video, the default model and
SQLite under the data directory. docs/config.md is the reference.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from appliance.errors import ApplianceError


def _default_threads() -> int:
    # Leave one core for decoding and the rest of the pipeline.
    return max(1, (os.cpu_count() or 2) - 1)


def _rule(default: Any = dataclasses.MISSING, *, lo: float | None = None, hi: float | None = None,
          factory: Any = dataclasses.MISSING, doc: str = "") -> Any:
    meta = {"lo": lo, "hi": hi, "doc": doc}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DeviceConfig:
    id: str = _rule(factory=socket.gethostname, doc="unique id of this device; names its events")


@dataclass
class CameraConfig:
    id: str = _rule(doc="camera name, unique on this device")
    source: str = _rule(doc="URI: path, file://, rtsp://, v4l2:///dev/videoN, or asset:NAME")
    realtime: bool = _rule(True, doc="files: play at native frame rate, like a camera")
    loop: bool = _rule(False, doc="files: start again at the end")


@dataclass
class DetectConfig:
    model: str = _rule("ssd-mobilenet-v2", doc="model name under models/, or a path to a model.yaml")
    backend: Literal["auto", "litert", "onnxruntime"] = _rule("auto")
    threshold: float = _rule(0.5, lo=0.0, hi=1.0, doc="minimum detection score")
    classes: list[str] = _rule(
        factory=lambda: ["person", "bicycle", "car", "motorcycle", "bus", "truck"],
        doc="labels to keep; empty keeps all")
    threads: int = _rule(factory=_default_threads, lo=1, hi=64, doc="inference threads")


@dataclass
class TrackConfig:
    max_age: int = _rule(5, lo=1, hi=1000, doc="frames a track survives without a detection")
    min_hits: int = _rule(3, lo=1, hi=1000, doc="detections before a track is reported")
    iou_threshold: float = _rule(0.3, lo=0.0, hi=1.0)


@dataclass
class EventsConfig:
    update_interval_s: float = _rule(5.0, lo=0.0, doc="least time between update events of a track")


@dataclass
class StoreConfig:
    batch_size: int = _rule(200, lo=1, hi=100_000, doc="most events per transaction")
    flush_interval_s: float = _rule(0.5, lo=0.01, hi=60.0, doc="longest an event waits to be written")


@dataclass
class LogConfig:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = _rule("INFO")
    stats_interval_s: float = _rule(5.0, lo=0.5, doc="seconds between status lines")


@dataclass
class Config:
    device: DeviceConfig = field(default_factory=DeviceConfig)
    cameras: list[CameraConfig] = field(
        default_factory=lambda: [CameraConfig(id="demo", source="asset:vtest.avi")])
    detect: DetectConfig = field(default_factory=DetectConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    log: LogConfig = field(default_factory=LogConfig)


class _Bad(Exception):
    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}" if path else reason)


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, (dict, list)) else type(value).__name__


def _convert(tp: Any, value: Any, path: str, meta: typing.Mapping[str, Any]) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise _Bad(path, f"must be one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise _Bad(path, f"expected a list, got {_describe(value)}")
        (item,) = typing.get_args(tp)
        return [_convert(item, v, f"{path}[{i}]", {}) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise _Bad(path, f"expected true or false, got {_describe(value)}")
        return value
    if tp in (int, float):
        ok = isinstance(value, int) if tp is int else isinstance(value, (int, float))
        if not ok or isinstance(value, bool):
            raise _Bad(path, f"expected {'an integer' if tp is int else 'a number'}, got {_describe(value)}")
        lo, hi = meta.get("lo"), meta.get("hi")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise _Bad(path, f"must be between {lo} and {hi if hi is not None else 'any'}, got {value}")
        return tp(value)
    if tp is str:
        if not isinstance(value, str) or not value.strip():
            raise _Bad(path, f"expected a non-empty string, got {_describe(value)}")
        return value
    raise TypeError(f"config type {tp} at {path} is not supported")


def _build(cls: type, data: Any, path: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _Bad(path, f"expected a mapping, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            where = f"{path}.{key}" if path else str(key)
            raise _Bad(where, f"unknown key (valid keys: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        where = f"{path}.{name}" if path else name
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], where, f.metadata)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise _Bad(where, "required key is missing")
    return cls(**kwargs)


def _check(cfg: Config) -> None:
    if not cfg.cameras:
        raise _Bad("cameras", "at least one camera is needed")
    seen: set[str] = set()
    for i, cam in enumerate(cfg.cameras):
        if cam.id in seen:
            raise _Bad(f"cameras[{i}].id", f"duplicate camera id {cam.id!r}")
        seen.add(cam.id)


def from_dict(data: Any, origin: str = "config") -> Config:
    try:
        cfg = _build(Config, data, "")
        _check(cfg)
    except _Bad as e:
        raise ApplianceError(f"{origin}: {e}") from None
    return cfg


def load(path: str | os.PathLike | None) -> Config:
    """Load and validate a YAML config file; None gives the built-in demo config."""
    if path is None:
        return Config()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ApplianceError(f"config {p}: cannot read: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ApplianceError(f"config {p}{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    return from_dict(data, str(p))


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
