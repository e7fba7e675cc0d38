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
import re
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
    source: str = _rule(doc="URI: a path, file://, asset:, rtsp://, v4l2://, csi://N, gst:PIPELINE, jetson:URI")
    realtime: bool = _rule(True, doc="files: play at native frame rate, like a camera")
    loop: bool = _rule(False, doc="files: start again at the end")
    # Live cameras (rtsp, v4l2, csi, gst, jetson): supervision and capture settings.
    stall_timeout_s: float = _rule(5.0, lo=0.5, hi=600.0, doc="no frame for this long: stalled, reconnect")
    open_timeout_s: float = _rule(10.0, lo=0.5, hi=600.0, doc="longest a connection attempt may take")
    backoff_initial_s: float = _rule(0.5, lo=0.01, hi=600.0, doc="first wait before reconnecting")
    backoff_max_s: float = _rule(2.0, lo=0.1, hi=3600.0, doc="longest wait between reconnection attempts")
    rtsp_transport: Literal["tcp", "udp"] = _rule("tcp", doc="RTSP: RTP over the RTSP TCP connection, or UDP")
    width: int = _rule(0, lo=0, hi=16384, doc="v4l2/csi/jetson: requested width; 0: the camera's default")
    height: int = _rule(0, lo=0, hi=16384, doc="v4l2/csi/jetson: requested height; 0: the camera's default")
    fps: float = _rule(0.0, lo=0.0, hi=1000.0, doc="v4l2/csi/jetson: requested frame rate; 0: default")
    fourcc: str = _rule("", doc="v4l2: pixel format to request, e.g. MJPG; empty: the driver's default")
    target_fps: float = _rule(0.0, lo=0.0, hi=1000.0, doc="adaptive: this camera's target; 0: adaptive.target_fps")
    late_after_s: float = _rule(1.0, lo=0.01, hi=600.0, doc="a frame older than this at detection is late")


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
class AdaptiveConfig:
    enabled: bool = _rule(True, doc="adapt each camera's detection stride to keep up with its target")
    target_fps: float = _rule(0.0, lo=0.0, hi=1000.0, doc="frames per second to handle; 0: the camera's own rate")
    min_stride: int = _rule(1, lo=1, hi=100, doc="finest stride: 1 detects every frame")
    max_stride: int = _rule(4, lo=1, hi=100, doc="coarsest stride: detect every max_stride-th frame")
    interval_s: float = _rule(1.0, lo=0.1, hi=60.0, doc="seconds between measurements")
    cooldown_s: float = _rule(5.0, lo=0.0, hi=3600.0, doc="least time between two changes of one camera")
    down_ratio: float = _rule(0.9, lo=0.1, hi=1.0, doc="step down when throughput < down_ratio x target")
    up_load: float = _rule(0.7, lo=0.05, hi=1.0, doc="step up when the detector's load after it would be <= this")


@dataclass
class PowerScheduleEntry:
    at: str = _rule(doc="local time HH:MM from which the mode applies, every day")
    mode: str = _rule(doc="power mode name (or nvpmodel id)")


@dataclass
class PowerConfig:
    policy: Literal["monitor", "fixed", "thermal", "schedule"] = _rule("monitor")
    mode: str = _rule("", doc="fixed: the mode; thermal: the mode to hold when cool; empty: the fastest")
    modes: list[str] = _rule(factory=list, doc="modes from fastest to most frugal; empty: the platform's")
    step_down_c: float = _rule(80.0, lo=20.0, hi=150.0, doc="step down at or above this temperature")
    step_up_c: float = _rule(70.0, lo=0.0, hi=150.0, doc="step back up after cooling below this")
    cooldown_s: float = _rule(120.0, lo=0.0, hi=86400.0, doc="time below step_up_c before a step up")
    interval_s: float = _rule(5.0, lo=0.05, hi=3600.0, doc="seconds between readings")
    schedule: list[PowerScheduleEntry] = _rule(factory=list, doc="schedule policy: modes by time of day")
    zones: list[str] = _rule(factory=list, doc="thermal zones to watch; empty: all real ones")
    jetson_clocks: bool = _rule(False, doc="Jetson: lock clocks at their maximum in the fastest mode")
    backend: Literal["auto", "jetson", "linux", "none"] = _rule("auto")
    root: str = _rule("/", doc="where /sys, /proc and /etc are read from (tests point it at a fake tree)")
    nvpmodel_cmd: str = _rule("nvpmodel", doc="nvpmodel executable (name on PATH, or a path)")
    jetson_clocks_cmd: str = _rule("jetson_clocks", doc="jetson_clocks executable")
    vcgencmd_cmd: str = _rule("vcgencmd", doc="vcgencmd executable (Raspberry Pi)")


@dataclass
class WebConfig:
    enabled: bool = _rule(True, doc="serve the dashboard, /healthz and /metrics")
    host: str = _rule("0.0.0.0", doc="address to listen on; 127.0.0.1 whenever no password is set")
    port: int = _rule(8080, lo=0, hi=65535, doc="TCP port; 0 picks a free one")
    password_hash: str = _rule("", doc="salted hash written by `appliance passwd`; none: local only")
    stale_after_s: float = _rule(10.0, lo=1.0, doc="/healthz fails when no frame came through for this long")


@dataclass
class UplinkTlsConfig:  # TLS is on when ca_file is set; "" means unset
    ca_file: str = _rule("", doc="CA certificate(s) that signed the broker's certificate (PEM)")
    cert_file: str = _rule("", doc="client certificate (PEM), for brokers that require one")
    key_file: str = _rule("", doc="private key of cert_file (PEM)")


@dataclass
class UplinkBacklogConfig:
    max_rows: int = _rule(1_000_000, lo=1, doc="most events kept in SQLite")
    max_bytes: int = _rule(512 * 1024 * 1024, lo=1000, doc="most event payload bytes kept in SQLite")
    max_age_days: float = _rule(30.0, lo=0.001, doc="events older than this are removed")
    check_interval_s: float = _rule(60.0, lo=0.1, doc="seconds between retention checks")


@dataclass
class UplinkConfig:
    enabled: bool = _rule(False, doc="send events to an MQTT broker (docs/mqtt.md)")
    host: str = _rule("localhost", doc="broker host name or address")
    port: int = _rule(1883, lo=1, hi=65535, doc="broker port (8883 is usual for TLS)")
    topic_prefix: str = _rule("appliance", doc="topics are <topic_prefix>/<device.id>/...")
    username: str = _rule("", doc="broker user name; \"\" connects without one")
    password: str = _rule("", doc="broker password; \"\" takes $APPLIANCE_MQTT_PASSWORD")
    tls: UplinkTlsConfig = field(default_factory=UplinkTlsConfig)
    batch_size: int = _rule(50, lo=1, hi=1000, doc="most events per MQTT message")
    max_inflight: int = _rule(10, lo=1, hi=1000, doc="most messages published and not yet acknowledged")
    bandwidth_bytes_per_s: int = _rule(0, lo=0, doc="payload bytes per second at most; 0: no cap")
    stats_interval_s: float = _rule(60.0, lo=1.0, doc="seconds between stats messages")
    keepalive_s: int = _rule(30, lo=5, hi=3600, doc="MQTT keepalive")
    reconnect_min_s: float = _rule(0.5, lo=0.05, hi=3600.0, doc="first reconnect delay")
    reconnect_max_s: float = _rule(60.0, lo=0.1, hi=3600.0, doc="longest reconnect delay")
    drain_timeout_s: float = _rule(10.0, lo=0.0, hi=3600.0, doc="at shutdown, how long to keep sending")
    backlog: UplinkBacklogConfig = field(default_factory=UplinkBacklogConfig)


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
    adaptive: AdaptiveConfig = field(default_factory=AdaptiveConfig)
    power: PowerConfig = field(default_factory=PowerConfig)
    web: WebConfig = field(default_factory=WebConfig)
    uplink: UplinkConfig = field(default_factory=UplinkConfig)


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
    if cfg.adaptive.min_stride > cfg.adaptive.max_stride:
        raise _Bad("adaptive.min_stride", f"must not exceed adaptive.max_stride ({cfg.adaptive.max_stride})")
    if cfg.power.step_up_c >= cfg.power.step_down_c:
        raise _Bad("power.step_up_c", f"must be below power.step_down_c ({cfg.power.step_down_c})")


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


MASK = "***"
_SECRET_KEY = re.compile(r"pass|secret|token|private|credential", re.IGNORECASE)
_URI_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/:@\s]*:)[^@/\s]+(?=@)", re.IGNORECASE)


def redact_uri(text: str) -> str:
    """rtsp://user:pw@host/... as rtsp://user:***@host/..., for logs, status and shown config."""
    return _URI_PASSWORD.sub(lambda m: m["head"] + MASK, text)


def mask_secrets(value: Any, key: str = "") -> Any:
    """A copy of a config dict with secret values (passwords, hashes, tokens) and passwords
    inside URIs masked. A secret left unset stays visibly unset ("")."""
    if isinstance(value, dict):
        return {k: mask_secrets(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v, key) for v in value]
    if isinstance(value, str):
        if _SECRET_KEY.search(key):
            return MASK if value else ""
        return redact_uri(value)
    return value


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
