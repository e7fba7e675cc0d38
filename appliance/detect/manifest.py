"""Model manifests: models/<name>/model.yaml says what file to run and how to feed and read it.

The manifest is the only place a model's quirks live (input size, resize mode, decoder,
labels), so adding a model is adding a folder, not code. See models/README.md.

The file's keys are the pydantic model `ManifestFile` (unknown keys, wrong types and
values are errors that name the manifest and the key, all of them at once); load_manifest
then resolves the files it names and returns a `ModelManifest`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, TypeVar, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from appliance.errors import ApplianceError
from appliance.paths import MODELS_DIR

Format = Literal["tflite", "onnx", "engine"]  # engine: a TensorRT engine (docs/tensorrt.md)
Decoder = Literal["ssd", "yolo"]
Resize = Literal["stretch", "letterbox"]
Color = Literal["rgb", "bgr"]
Layout = Literal["nhwc", "nchw"]
Dtype = Literal["uint8", "float32"]
OutputLayout = Literal["auto", "channels_first", "channels_last", "objectness", "end2end"]
OutputBoxes = Literal["pixels", "normalized"]
FORMATS, DECODERS, RESIZES, COLORS, LAYOUTS, DTYPES, OUTPUT_LAYOUTS, OUTPUT_BOXES = (
    get_args(t) for t in (Format, Decoder, Resize, Color, Layout, Dtype, OutputLayout, OutputBoxes))
_YOLO_ONLY = ("output_layout", "output_boxes", "nms_iou")


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
    # Input widths the model may run at, largest first (the adaptive controller's size rungs);
    # () means only input.width. Heights keep the input's aspect (input_spec_at).
    input_sizes: tuple[int, ...] = ()
    # format engine: the ONNX file the engine was built from, so that a device whose GPU or
    # TensorRT differs rebuilds it (engine_build.py); None: the engine is all there is.
    onnx_file: Path | None = None


def input_spec_at(spec: InputSpec, width: int) -> InputSpec:
    """The input spec at another width (from a manifest's input_sizes), same aspect."""
    return replace(spec, width=width, height=width * spec.height // spec.width)


# -- the file's schema ------------------------------------------------------------------

_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, hide_input_in_errors=True)


class ManifestInput(BaseModel):
    model_config = _STRICT

    width: int = Field(gt=0, description="input width in pixels")
    height: int = Field(gt=0, description="input height in pixels")
    resize: Resize = Field("stretch", description="stretch, or letterbox (keep aspect, pad 114)")
    color: Color = Field("rgb", description="channel order the network wants; frames arrive BGR")
    layout: Layout = "nhwc"
    dtype: Dtype = Field("uint8", description="uint8: raw 0..255; float32: scaled to 0..1")


def _file_name(value: Any) -> Any:
    if not isinstance(value, str) or not value:
        raise PydanticCustomError("file_name", "must be a file name, got {got}", {"got": repr(value)})
    return value


def _text(value: Any) -> Any:
    # version: "1", 1 and 1.5 all read as text.
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise PydanticCustomError("text", "must be a string, got {got}", {"got": repr(value)})
    return str(value)


# Words for errors whose pydantic wording would not say what is wanted.
_MESSAGES = {
    "input": "must be a mapping with width and height",
    "input.width": "must be a positive integer",
    "input.height": "must be a positive integer",
    "nms_iou": "must be a number in (0, 1]",
}


class ModelFileKeys(BaseModel):
    """The keys every model.yaml has, detector or classifier: who it is and its files."""

    model_config = _STRICT

    name: str
    version: str = "unversioned"
    file: str
    edgetpu_file: Optional[str] = None
    license: str = ""
    description: str = ""

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> Any:
        if not isinstance(value, str) or not value:
            raise PydanticCustomError("name", "must be a non-empty string, got {got}", {"got": repr(value)})
        return value

    @field_validator("file", "edgetpu_file", mode="before")
    @classmethod
    def _files(cls, value: Any, info: ValidationInfo) -> Any:
        return None if value is None and info.field_name == "edgetpu_file" else _file_name(value)

    @field_validator("version", "license", "description", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> Any:
        return _text(value)


class ManifestFile(ModelFileKeys):
    """The keys of a detector's model.yaml (models/README.md)."""

    kind: ClassVar[str] = "detector"  # read_manifest tells a detector's manifest from a classifier's
    messages: ClassVar[dict[str, str]] = _MESSAGES

    format: Format
    input: ManifestInput
    decoder: Decoder
    labels: Union[list[str], str, None] = None
    output_layout: OutputLayout = "auto"
    output_boxes: OutputBoxes = "pixels"
    nms_iou: float = Field(0.45, gt=0.0, le=1.0)
    onnx_file: Optional[str] = Field(None, description="format engine: the ONNX file it was built from")
    input_sizes: Optional[list[int]] = Field(
        None, description="input widths the model may run at (one of them input.width); heights keep "
                          "the input's aspect; the adaptive controller steps down through them")

    @field_validator("input_sizes", mode="before")
    @classmethod
    def _sizes(cls, value: Any) -> Any:
        if value is not None and (not isinstance(value, list) or not value or not all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
                or len(set(value)) != len(value)):
            raise PydanticCustomError("input_sizes", "must be a list of different positive integers, got {got}",
                                      {"got": repr(value)})
        return value

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, value: Any) -> Any:
        if isinstance(value, list) and (not value or not all(isinstance(x, str) for x in value)):
            raise PydanticCustomError("labels", "must be a non-empty list of strings", {})
        if isinstance(value, str) and not value:
            raise PydanticCustomError("labels", "must be a file name or a list of strings, got ''", {})
        if value is not None and not isinstance(value, (str, list)):
            raise PydanticCustomError("labels", "must be a file name or a list of strings, got {got}",
                                      {"got": repr(value)})
        return value

    @model_validator(mode="after")
    def _rules(self) -> "ManifestFile":
        problems = []
        if self.decoder != "yolo":
            problems += [f"{k}: only applies to decoder yolo" for k in _YOLO_ONLY if k in self.model_fields_set]
        if self.edgetpu_file is not None and self.format != "tflite":
            problems.append("edgetpu_file: only applies to format tflite")
        if self.onnx_file is not None and self.format != "engine":
            problems.append("onnx_file: only applies to format engine (an onnx model's file is its ONNX file)")
        if self.labels is None and self.format != "onnx":
            problems.append(f"labels: required for format {self.format} (a file or a list); "
                            "only onnx models may take them from their metadata")
        if self.input_sizes is not None:
            i = self.input
            if i.width not in self.input_sizes:
                problems.append(f"input_sizes: must include input.width ({i.width}), got {self.input_sizes}")
            odd = [s for s in self.input_sizes if s * i.height % i.width]
            if odd:
                problems.append(f"input_sizes: {odd} give no whole height at the input's aspect "
                                f"{i.width}x{i.height}")
            if self.format == "tflite":
                problems.append("input_sizes: only applies to format onnx or engine")
        if problems:
            raise PydanticCustomError("manifest_rules", "{detail}",
                                      {"detail": "; ".join(problems), "errors": tuple(problems)})
        return self


def _key(loc: tuple) -> str:
    return ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc).replace(".[", "[")


def _model_at(schema: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that holds the keys at `loc` (() is the schema itself)."""
    model = schema
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        for t in (field.annotation, *get_args(field.annotation)):  # Model or Optional[Model]
            if isinstance(t, type) and issubclass(t, BaseModel):
                model = t
                break
        else:
            return None
    return model


def _lines(e: ValidationError, schema: type[BaseModel] = ManifestFile) -> list[str]:
    """One line per problem, naming the key; `schema` is the manifest's model (its ClassVar
    `messages` gives the words for keys whose pydantic wording would not say what is wanted)."""
    messages: dict[str, str] = getattr(schema, "messages", {})
    out = []
    for err in e.errors():
        loc, t, value = err["loc"], err["type"], err.get("input")
        key = _key(loc)
        parent = _model_at(schema, loc[:-1])
        if t == "manifest_rules":
            out.extend(err["ctx"]["errors"])
        elif t == "extra_forbidden" and parent is not None:
            prefix = _key(loc[:-1]) + "." if loc[:-1] else ""
            allowed = ", ".join(sorted(parent.model_fields))
            out.append(f"unknown key {prefix}{loc[-1]} (allowed: {allowed})")
        elif t == "missing":
            out.append(f"missing required key {key}")
        elif t == "literal_error" and parent is not None and str(loc[-1]) in parent.model_fields:
            choices = ", ".join(get_args(parent.model_fields[str(loc[-1])].annotation))
            out.append(f"{key}: must be one of {choices}, got {value!r}")
        elif key in messages:
            out.append(f"{key}: {messages[key]}, got {value!r}")
        elif t in ("string_type", "list_type"):
            out.append(f"{key}: must be a string, got {value!r}")
        else:
            out.append(f"{key}: {err['msg']}")
    return list(dict.fromkeys(out))  # a union's members may repeat one message


def show_path(path: Path) -> str:
    """A path as a user would type it: relative to the working directory when inside it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # other drive on Windows
        return str(path)
    return str(path) if rel.startswith("..") else rel


def looks_like_path(name_or_path: str | os.PathLike) -> bool:
    text = str(name_or_path)
    return text.endswith((".yaml", ".yml")) or os.sep in text or "/" in text or Path(text).exists()


def known_models() -> list[str]:
    return sorted(d.name for d in MODELS_DIR.glob("*") if (d / "model.yaml").is_file())


def find_manifest(name_or_path: str | os.PathLike) -> Path:
    """models/<name>/model.yaml for a bare name; else the given file (or dir/model.yaml)."""
    text = str(name_or_path)
    p = Path(text)
    if looks_like_path(text):
        if p.is_dir():
            p = p / "model.yaml"
        if not p.is_file():
            raise ApplianceError(f"model manifest {show_path(p)} does not exist")
        return p.resolve()
    p = MODELS_DIR / text / "model.yaml"
    if not p.is_file():
        raise ApplianceError(
            f"unknown model '{text}': no {show_path(p)}; known models: {', '.join(known_models()) or 'none'}"
        )
    return p.resolve()


# The key only one kind of manifest has: a detector's manifest given where a classifier's is
# wanted (or the other way round) is told apart by it, for one clear line instead of many.
KIND_KEYS = {"detector": "decoder", "classifier": "output"}


_Schema = TypeVar("_Schema", bound=BaseModel)


def read_manifest(path: Path, schema: type[_Schema] = ManifestFile) -> _Schema:  # type: ignore[assignment]
    """The checked keys of the manifest at `path` (an instance of `schema`: ManifestFile for a
    detector, the default; appliance/classify/manifest.py passes its own); the files it names
    are not looked up."""
    from appliance.config.loader import YamlProblem, parse_yaml, read_text

    where = show_path(path)
    try:
        raw = parse_yaml(read_text(path))
    except OSError as e:
        raise ApplianceError(f"{where}: not a readable YAML file: {e.strerror or e}") from None
    except YamlProblem as e:
        raise ApplianceError(f"{where}: not a readable YAML file: {e.lines[0]}") from None
    if not isinstance(raw, dict):
        raise ApplianceError(f"{where}: must be a YAML mapping of keys, got {type(raw).__name__}")
    kind: str = getattr(schema, "kind", "")
    own = KIND_KEYS.get(kind)
    for other, other_key in KIND_KEYS.items():
        if own and other != kind and other_key in raw and own not in raw:
            raise ApplianceError(f"{where}: is a {other} manifest (it has {other_key} and no {own}); "
                                 f"a {kind} is wanted here")
    try:
        return schema.model_validate(raw)
    except ValidationError as e:
        raise ApplianceError("\n".join(f"{where}: {line}" for line in _lines(e, schema))) from None


def resolve_file(where: str, key: str, value: str, manifest_dir: Path, assets_dir: Path) -> Path:
    """A file named in the manifest: beside the manifest first, then in the asset cache."""
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


def manifest_labels(m: ManifestFile, path: Path, assets_dir: Path) -> tuple[str, ...] | None:
    """The labels a manifest gives (a list, or a file it names); None: from the model's metadata."""
    if m.labels is None:
        return None
    if isinstance(m.labels, list):
        return tuple(m.labels)
    where = show_path(path)
    file = resolve_file(where, "labels", m.labels, path.parent, assets_dir)
    try:
        labels = parse_labels(file.read_text(encoding="utf-8").splitlines())
    except (OSError, UnicodeDecodeError) as e:
        raise ApplianceError(f"{where}: labels: cannot read {show_path(file)}: {e}") from None
    if not labels:
        raise ApplianceError(f"{where}: labels: {show_path(file)} has no labels")
    return tuple(labels)


def load_manifest(name_or_path: str | os.PathLike, assets_dir: Path) -> ModelManifest:
    """Read and check a manifest; files are resolved and must exist."""
    path = find_manifest(name_or_path)
    m = read_manifest(path)
    where, manifest_dir, assets_dir = show_path(path), path.parent, Path(assets_dir)
    edgetpu_path = None
    if m.edgetpu_file is not None:
        # Optional at load: it is only needed when a Coral is actually present.
        for c in (manifest_dir / m.edgetpu_file, assets_dir / m.edgetpu_file):
            if c.is_file():
                edgetpu_path = c.resolve()
                break
        else:
            edgetpu_path = (assets_dir / m.edgetpu_file).resolve()
    i = m.input
    onnx_path = None
    if m.onnx_file is not None:
        onnx_path = resolve_file(where, "onnx_file", m.onnx_file, manifest_dir, assets_dir)
    return ModelManifest(
        name=m.name,
        version=m.version,
        path=path,
        file=_engine_file(m.file, manifest_dir, assets_dir) if onnx_path is not None
        else resolve_file(where, "file", m.file, manifest_dir, assets_dir),
        format=m.format,
        input=InputSpec(width=i.width, height=i.height, resize=i.resize, color=i.color,
                        layout=i.layout, dtype=i.dtype),
        decoder=m.decoder,
        labels=manifest_labels(m, path, assets_dir),
        edgetpu_file=edgetpu_path,
        license=m.license,
        description=m.description,
        output_layout=m.output_layout,
        output_boxes=m.output_boxes,
        nms_iou=float(m.nms_iou),
        input_sizes=tuple(sorted(m.input_sizes, reverse=True)) if m.input_sizes else (),
        onnx_file=onnx_path,
    )


def _engine_file(value: str, manifest_dir: Path, assets_dir: Path) -> Path:
    """A format engine model's engine: with an onnx_file it may be missing (it is built
    from the ONNX file then), so it resolves to where it would be."""
    p = Path(value).expanduser()
    candidates = [p] if p.is_absolute() else [manifest_dir / p, assets_dir / p]
    return next((c for c in candidates if c.is_file()), candidates[0]).resolve()
