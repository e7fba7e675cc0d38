"""Model manifests: models/<name>/model.yaml says what file to run and how to feed and read it.

The manifest is the only place a model's quirks live (input size, resize mode, decoder,
labels), so adding a model is adding a folder, not code. See models/README.md.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from appliance.errors import ApplianceError
from appliance.paths import MODELS_DIR

FORMATS = ("tflite", "onnx", "engine")  # engine: TensorRT, backend not implemented yet
DECODERS = ("ssd", "yolo")
RESIZES = ("stretch", "letterbox")
COLORS = ("rgb", "bgr")
LAYOUTS = ("nhwc", "nchw")
DTYPES = ("uint8", "float32")
OUTPUT_LAYOUTS = ("auto", "channels_first", "channels_last", "objectness", "end2end")
OUTPUT_BOXES = ("pixels", "normalized")

_TOP_KEYS = {
    "name", "version", "file", "edgetpu_file", "format", "input", "decoder", "labels",
    "license", "description", "output_layout", "output_boxes", "nms_iou",
}
_YOLO_ONLY = ("output_layout", "output_boxes", "nms_iou")
_INPUT_KEYS = {"width", "height", "resize", "color", "layout", "dtype"}


@dataclass(frozen=True)
class InputSpec:
    width: int
    height: int
    resize: str = "stretch"  # stretch | letterbox (keep aspect, pad 114)
    color: str = "rgb"  # channel order the network wants; frames arrive BGR
    layout: str = "nhwc"
    dtype: str = "uint8"  # uint8: raw 0..255; float32: scaled to 0..1


@dataclass(frozen=True)
class ModelManifest:
    name: str
    version: str
    path: Path  # the model.yaml itself
    file: Path  # resolved, exists
    format: str
    input: InputSpec
    decoder: str
    labels: tuple[str, ...] | None  # index = class id, "" for gaps; None: read from model metadata
    edgetpu_file: Path | None = None  # resolved if present; checked when a Coral is found
    license: str = ""
    description: str = ""
    output_layout: str = "auto"  # yolo: which raw head layout; auto guesses from shape + labels
    output_boxes: str = "pixels"  # yolo: boxes in input pixels, or normalised 0..1
    nms_iou: float = 0.45  # yolo: class-aware NMS IoU threshold


def show_path(path: Path) -> str:
    """A path as a user would type it: relative to the working directory when inside it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # other drive on Windows
        return str(path)
    return str(path) if rel.startswith("..") else rel


def find_manifest(name_or_path: str | os.PathLike) -> Path:
    """models/<name>/model.yaml for a bare name; else the given file (or dir/model.yaml)."""
    text = str(name_or_path)
    p = Path(text)
    looks_like_path = text.endswith((".yaml", ".yml")) or os.sep in text or "/" in text or p.exists()
    if looks_like_path:
        if p.is_dir():
            p = p / "model.yaml"
        if not p.is_file():
            raise ApplianceError(f"model manifest {show_path(p)} does not exist")
        return p.resolve()
    p = MODELS_DIR / text / "model.yaml"
    if not p.is_file():
        known = sorted(d.name for d in MODELS_DIR.glob("*") if (d / "model.yaml").is_file())
        raise ApplianceError(
            f"unknown model '{text}': no {show_path(p)}; known models: {', '.join(known) or 'none'}"
        )
    return p.resolve()


def _resolve(where: str, key: str, value: Any, manifest_dir: Path, assets_dir: Path) -> Path:
    """A file named in the manifest: beside the manifest first, then in the asset cache."""
    if not isinstance(value, str) or not value:
        raise ApplianceError(f"{where}: {key}: must be a file name, got {value!r}")
    p = Path(value).expanduser()
    candidates = [p] if p.is_absolute() else [manifest_dir / p, assets_dir / p]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise ApplianceError(
        f"{where}: {key}: file {value} not found (looked in "
        + ", ".join(show_path(c) for c in candidates)
        + "); run 'appliance fetch' to get the model files"
    )


def _choice(where: str, key: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ApplianceError(f"{where}: {key}: must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _check_keys(where: str, prefix: str, got: dict, allowed: set[str]) -> None:
    unknown = sorted(set(got) - allowed)
    if unknown:
        raise ApplianceError(
            f"{where}: unknown key {prefix}{unknown[0]} (allowed: {', '.join(sorted(allowed))})"
        )


def _input_spec(where: str, raw: Any) -> InputSpec:
    if not isinstance(raw, dict):
        raise ApplianceError(f"{where}: input: must be a mapping with width and height, got {raw!r}")
    _check_keys(where, "input.", raw, _INPUT_KEYS)
    for k in ("width", "height"):
        v = raw.get(k)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ApplianceError(f"{where}: input.{k}: must be a positive integer, got {v!r}")
    return InputSpec(
        width=raw["width"],
        height=raw["height"],
        resize=_choice(where, "input.resize", raw.get("resize", "stretch"), RESIZES),
        color=_choice(where, "input.color", raw.get("color", "rgb"), COLORS),
        layout=_choice(where, "input.layout", raw.get("layout", "nhwc"), LAYOUTS),
        dtype=_choice(where, "input.dtype", raw.get("dtype", "uint8"), DTYPES),
    )


def parse_labels(lines: list[str]) -> list[str]:
    """Labels from "id label" lines (ids may have gaps, filled with "") or one label per line."""
    lines = [ln.strip() for ln in lines if ln.strip()]
    pairs = [re.match(r"^(\d+)[\s:,]+(.+)$", ln) for ln in lines]
    if lines and all(pairs):
        by_id = {int(m.group(1)): m.group(2).strip() for m in pairs}  # type: ignore[union-attr]
        labels = [""] * (max(by_id) + 1)
        for i, name in by_id.items():
            labels[i] = name
        return labels
    return lines


def _labels(where: str, raw: Any, manifest_dir: Path, assets_dir: Path, fmt: str) -> tuple | None:
    if raw is None:
        if fmt != "onnx":
            raise ApplianceError(
                f"{where}: labels: required for format {fmt} (a file or a list); "
                "only onnx models may take them from their metadata"
            )
        return None
    if isinstance(raw, list):
        if not raw or not all(isinstance(x, str) for x in raw):
            raise ApplianceError(f"{where}: labels: must be a non-empty list of strings")
        return tuple(raw)
    path = _resolve(where, "labels", raw, manifest_dir, assets_dir)
    try:
        labels = parse_labels(path.read_text(encoding="utf-8").splitlines())
    except (OSError, UnicodeDecodeError) as e:
        raise ApplianceError(f"{where}: labels: cannot read {show_path(path)}: {e}") from None
    if not labels:
        raise ApplianceError(f"{where}: labels: {show_path(path)} has no labels")
    return tuple(labels)


def load_manifest(name_or_path: str | os.PathLike, assets_dir: Path) -> ModelManifest:
    """Read and check a manifest; files are resolved and must exist."""
    path = find_manifest(name_or_path)
    where = show_path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ApplianceError(f"{where}: not a readable YAML file: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ApplianceError(f"{where}: must be a YAML mapping of keys, got {type(raw).__name__}")
    _check_keys(where, "", raw, _TOP_KEYS)
    for k in ("name", "file", "format", "input", "decoder"):
        if k not in raw:
            raise ApplianceError(f"{where}: missing required key {k}")
    name = raw["name"]
    if not isinstance(name, str) or not name:
        raise ApplianceError(f"{where}: name: must be a non-empty string, got {name!r}")
    fmt = _choice(where, "format", raw["format"], FORMATS)
    decoder = _choice(where, "decoder", raw["decoder"], DECODERS)
    if decoder != "yolo":
        for k in _YOLO_ONLY:
            if k in raw:
                raise ApplianceError(f"{where}: {k}: only applies to decoder yolo")
    nms_iou = raw.get("nms_iou", 0.45)
    if not isinstance(nms_iou, (int, float)) or isinstance(nms_iou, bool) or not 0 < nms_iou <= 1:
        raise ApplianceError(f"{where}: nms_iou: must be a number in (0, 1], got {nms_iou!r}")
    manifest_dir = path.parent
    edgetpu = raw.get("edgetpu_file")
    edgetpu_path = None
    if edgetpu is not None:
        if fmt != "tflite":
            raise ApplianceError(f"{where}: edgetpu_file: only applies to format tflite")
        if not isinstance(edgetpu, str) or not edgetpu:
            raise ApplianceError(f"{where}: edgetpu_file: must be a file name, got {edgetpu!r}")
        # Optional at load: it is only needed when a Coral is actually present.
        for c in (manifest_dir / edgetpu, assets_dir / edgetpu):
            if c.is_file():
                edgetpu_path = c.resolve()
                break
        else:
            edgetpu_path = (assets_dir / edgetpu).resolve()
    for k in ("version", "license", "description"):
        if k in raw and not isinstance(raw[k], (str, int, float)):
            raise ApplianceError(f"{where}: {k}: must be a string, got {raw[k]!r}")
    return ModelManifest(
        name=name,
        version=str(raw.get("version", "unversioned")),
        path=path,
        file=_resolve(where, "file", raw["file"], manifest_dir, assets_dir),
        format=fmt,
        input=_input_spec(where, raw["input"]),
        decoder=decoder,
        labels=_labels(where, raw.get("labels"), manifest_dir, assets_dir, fmt),
        edgetpu_file=edgetpu_path,
        license=str(raw.get("license", "")),
        description=str(raw.get("description", "")),
        output_layout=_choice(where, "output_layout", raw.get("output_layout", "auto"), OUTPUT_LAYOUTS),
        output_boxes=_choice(where, "output_boxes", raw.get("output_boxes", "pixels"), OUTPUT_BOXES),
        nms_iou=float(nms_iou),
    )
