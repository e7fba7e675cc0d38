"""TensorRT engines kept under <data_dir>/engines/, one per build key.

An engine runs only on the GPU model and TensorRT version that built it, so everything
a build depends on is in its key (EngineKey): TensorRT version, GPU name and compute
capability, the ONNX file's sha256, precision, input shape, batch, DLA core and, for
INT8, the calibration source. The file name carries the key's digest, and a sidecar
JSON beside the engine holds the key itself and the engine's sha256:

    engines/yolov8n-fp16-3f9c0a1be2d47c55.engine
    engines/yolov8n-fp16-3f9c0a1be2d47c55.json   {"key": {...}, "engine_sha256": ..., ...}

An engine is loaded only when its sidecar's key equals the key of this device and its
bytes hash to the recorded sha256; anything else (another JetPack, another GPU, a new
ONNX file, a partial write, a corrupt file) is rebuilt, never loaded. Both files are
written to a temporary name and renamed, the sidecar last: a build killed half-way
leaves no sidecar, so its engine is never trusted. This module knows nothing of
TensorRT itself (engine_build.py builds, backends/tensorrt.py loads); it runs everywhere.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from appliance.assets import sha256_of
from appliance.detect.manifest import show_path

log = logging.getLogger(__name__)

ENGINES_DIR = "engines"
KEEP_PER_MODEL = 6  # engines of one model kept for this device (input sizes, precisions)
STALE_TMP_S = 3600.0  # a temporary file this old is from a build that died
PRECISIONS = ("fp16", "int8", "fp32")

# What a key component is called in messages ("built for TensorRT 8.6.2, this is 10.3.0").
_WORDS = {"tensorrt": "TensorRT", "gpu": "GPU", "compute": "compute capability",
          "onnx_sha256": "ONNX sha256", "precision": "precision", "input_shape": "input shape",
          "batch": "batch", "dla_core": "DLA core", "calibration": "calibration source"}
DEVICE_PARTS = ("tensorrt", "gpu", "compute")  # an engine differing in these can never load here


@dataclass(frozen=True)
class EngineKey:
    tensorrt: str  # trt.__version__
    gpu: str  # the CUDA device name, e.g. "Orin"
    compute: str  # compute capability, e.g. "8.7"
    onnx_sha256: str
    precision: str  # fp16 | int8 | fp32
    input_shape: tuple[int, ...]  # the largest input the engine takes, batch first
    batch: int
    dla_core: int | None = None
    calibration: str = ""  # int8: the calibration source as configured

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    def digest(self) -> str:
        text = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def differences(self, other: dict[str, Any], parts: tuple[str, ...] | None = None) -> list[str]:
        """What differs between this key and a recorded one, in words ("TensorRT 8.6.2 -> 10.3.0");
        parts: compare only these components."""
        mine = self.as_dict()
        out = []
        for name, value in mine.items():
            if parts is not None and name not in parts:
                continue
            theirs = other.get(name)
            if theirs != value:
                if name == "onnx_sha256":
                    out.append(f"{_WORDS[name]} {str(theirs)[:12]} -> {str(value)[:12]}")
                else:
                    out.append(f"{_WORDS[name]} {theirs} -> {value}")
        return out


@dataclass(frozen=True)
class EngineOptions:
    """How the TensorRT backend builds and where it keeps engines (from `detect.*`)."""

    cache_dir: Path  # <data_dir>/engines
    precision: str = "fp16"
    dla_core: int | None = None
    calibration_source: str | None = None  # int8: folder, video file or camera:ID (calibration.py)
    cameras: dict[str, str] = field(default_factory=dict)  # camera id -> source, for camera:ID
    assets_dir: Path | None = None  # for asset: sources
    calibration_frames: int = 128
    max_batch: int = 4  # used only when the ONNX model's batch dimension is dynamic
    progress: Callable[[float], None] | None = None  # 0..1 while building (the CLI's bar)


def default_options(data_dir: Path | None = None) -> EngineOptions:
    """The defaults (fp16, no DLA), engines under <data_dir>/engines ($APPLIANCE_DATA_DIR or ./data)."""
    from appliance import paths

    return EngineOptions(cache_dir=paths.data_dir(data_dir) / ENGINES_DIR)


def options_from_config(cfg: Any, data_dir: Path, assets_dir: Path | None = None,
                        progress: Callable[[float], None] | None = None) -> EngineOptions:
    """EngineOptions from a loaded config's `detect` section (and its cameras, for camera:ID)."""
    d = cfg.detect
    return EngineOptions(
        cache_dir=Path(data_dir) / ENGINES_DIR, precision=d.precision, dla_core=d.dla_core,
        calibration_source=d.calibration_source, cameras={c.id: c.source for c in cfg.cameras},
        assets_dir=assets_dir, progress=progress)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "model"


def engine_path(cache_dir: Path, model: str, key: EngineKey) -> Path:
    return Path(cache_dir) / f"{_slug(model)}-{key.precision}-{key.digest()}.engine"


def sidecar_path(engine: Path) -> Path:
    return engine.with_suffix(".json")


def read_sidecar(engine: Path) -> dict[str, Any] | None:
    """The build record beside an engine; None when missing or unreadable."""
    try:
        data = json.loads(sidecar_path(engine).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("key"), dict) \
            or not isinstance(data.get("engine_sha256"), str):
        return None
    return data


@dataclass(frozen=True)
class Lookup:
    path: Path | None  # an engine safe to load, or None: build one
    reason: str  # why it must be built ("" when found)


def check_engine(engine: Path, key: EngineKey, parts: tuple[str, ...] | None = None) -> str:
    """Why `engine` must not be loaded for `key` ("" when it may). parts: compare only
    these key components (a prebuilt engine of a `format: engine` manifest is checked for
    the device parts only: its ONNX, precision and shape are whatever it was built with)."""
    where = show_path(engine)
    if not engine.is_file():
        return f"no engine {where}"
    record = read_sidecar(engine)
    if record is None:
        return (f"{where} has no readable build record {sidecar_path(engine).name} "
                "(a build that did not finish, or an engine from elsewhere)")
    differ = key.differences(record["key"], parts)
    if differ:
        return f"{where} was built for another setup ({'; '.join(differ)})"
    try:
        size = engine.stat().st_size
        digest = sha256_of(engine)
    except OSError as e:
        return f"{where} cannot be read ({e.strerror or e})"
    if size != record.get("engine_bytes", size) or digest != record["engine_sha256"]:
        return f"{where} is corrupt or partial (its sha256 does not match its build record)"
    return ""


def lookup(cache_dir: Path, model: str, key: EngineKey) -> Lookup:
    """The cached engine for this key, or why there is none (naming what changed when an
    engine of this model was built here for another setup, e.g. before a JetPack upgrade)."""
    path = engine_path(cache_dir, model, key)
    why = check_engine(path, key)
    if not why:
        return Lookup(path, "")
    if not path.exists():
        newest = _newest_record(cache_dir, model)
        if newest is not None:
            changed = key.differences(newest["key"])
            why = f"no engine for this setup yet; the last one of {model} was built for " \
                  f"another ({'; '.join(changed)})" if changed else why
        else:
            why = f"no engine of {model} built on this device yet"
    return Lookup(None, why)


def _records(cache_dir: Path, model: str) -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for engine in Path(cache_dir).glob(f"{_slug(model)}-*.engine"):
        record = read_sidecar(engine)
        if record is not None and record.get("model") == model:
            out.append((engine, record))
    return out


def _newest_record(cache_dir: Path, model: str) -> dict[str, Any] | None:
    records = _records(cache_dir, model)
    return max(records, key=lambda r: r[1].get("built_at", 0.0))[1] if records else None


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the rename must not land before the bytes on an SD card
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def store(cache_dir: Path, model: str, key: EngineKey, engine: bytes, build_s: float,
          now: float | None = None) -> Path:
    """Write an engine and then its build record, each atomically; return the engine's path."""
    path = engine_path(cache_dir, model, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, engine)
    record = {"model": model, "key": key.as_dict(), "engine_sha256": hashlib.sha256(engine).hexdigest(),
              "engine_bytes": len(engine), "built_at": round(time.time() if now is None else now, 3),
              "build_s": round(build_s, 1)}
    _write_atomic(sidecar_path(path), json.dumps(record, indent=1).encode())
    return path


def remove(engine: Path) -> None:
    """Drop an engine, its record and its INT8 calibration cache."""
    for p in (sidecar_path(engine), engine, engine.with_suffix(".calib")):  # the record first
        try:
            p.unlink(missing_ok=True)
        except OSError as e:
            log.warning("engine cache: cannot remove %s (%s)", show_path(p), e)


def prune(cache_dir: Path, model: str, key: EngineKey, keep: int = KEEP_PER_MODEL,
          now: float | None = None) -> list[Path]:
    """Remove this model's engines that can never load here (another TensorRT version or
    GPU) and all but the `keep` newest others (the current one always stays); remove
    temporary files of builds that died and engines without a record. Returns what went."""
    cache_dir = Path(cache_dir)
    now = time.time() if now is None else now
    current = engine_path(cache_dir, model, key)
    gone: list[Path] = []
    mine = key.as_dict()
    usable = []
    for engine, record in _records(cache_dir, model):
        if engine == current:
            continue
        if any(record["key"].get(p) != mine[p] for p in DEVICE_PARTS):
            gone.append(engine)
        else:
            usable.append((record.get("built_at", 0.0), engine))
    usable.sort(reverse=True)
    gone += [engine for _, engine in usable[max(0, keep - 1):]]
    for engine in Path(cache_dir).glob(f"{_slug(model)}-*.engine"):
        if engine != current and not sidecar_path(engine).exists() and engine not in gone:
            gone.append(engine)  # a record-less engine is never loaded: it only takes space
    for engine in gone:
        remove(engine)
    for tmp in cache_dir.glob("*.tmp"):
        try:
            if now - tmp.stat().st_mtime > STALE_TMP_S:
                tmp.unlink()
                gone.append(tmp)
        except OSError:
            pass
    if gone:
        log.info("engine cache: removed %s", ", ".join(p.name for p in gone))
    return gone


# -- build progress, for the log, `appliance model build` and the status -----------------

class BuildStatus:
    """The engine build in progress in this process (one at a time), for status readers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict[str, Any] | None = None

    def start(self, model: str, precision: str) -> None:
        with self._lock:
            self._state = {"model": model, "precision": precision, "percent": 0,
                           "started_at": time.time()}

    def update(self, fraction: float) -> None:
        with self._lock:
            if self._state is not None:
                self._state["percent"] = int(max(0.0, min(1.0, fraction)) * 100)

    def finish(self) -> None:
        with self._lock:
            self._state = None

    def current(self) -> dict[str, Any] | None:
        """{"model", "precision", "percent", "started_at"} while a build runs, else None."""
        with self._lock:
            return dict(self._state) if self._state else None

    def text(self) -> str:
        s = self.current()
        return f"building engine {s['percent']} %" if s else ""


BUILDS = BuildStatus()
