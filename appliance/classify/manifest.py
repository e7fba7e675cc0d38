"""Classifier manifests: models/<name>/model.yaml for a second-stage classifier.

Like a detector's manifest (appliance/detect/manifest.py, whose helpers this reuses), the
manifest is the only place a classifier's quirks live: the file, how to feed it a crop,
whether its output still needs a softmax, its labels, and how its classes fold into the
appliance's vocabulary (`label_map`). A user's own classifier is a new folder, not code.
docs/classify.md describes every key.

The file's keys are the pydantic model `ClassifierManifestFile` (unknown keys, wrong types
and values are errors that name the manifest and the key, all of them at once);
load_manifest then resolves the files it names and returns a `ClassifierManifest`.
"""
from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Union

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from appliance.detect.manifest import (
    _STRICT,
    InputSpec,
    ManifestFile,
    ManifestInput,
    ModelFileKeys,
    find_manifest,
    manifest_labels,
    parse_labels,
    read_manifest,
    resolve_file,
    show_path,
)
from appliance.errors import ApplianceError

Format = Literal["tflite", "onnx"]
OTHER = "other"  # the vocabulary label of every model class the label map does not name
TFLITE_PREFIX = "tflite:"  # labels: tflite:<member>: a label file packed inside the .tflite (a zip)


@dataclass(frozen=True)
class ClassifierInputSpec(InputSpec):
    """InputSpec (size, resize, colour, layout, dtype) plus the float normalisation:
    a float32 input is (pixel - mean) / std per channel, pixels 0..255 in the model's
    channel order. uint8 inputs get the raw pixels and ignore mean and std."""

    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (255.0, 255.0, 255.0)  # default: 0..1, as detectors


@dataclass(frozen=True)
class ClassifierManifest:
    name: str
    version: str
    path: Path  # the model.yaml itself
    file: Path  # resolved, exists
    format: str
    input: ClassifierInputSpec
    softmax: bool  # apply a softmax to the output (the model gives logits)
    labels: tuple[str, ...] | None  # the model's classes by index; None: from ONNX metadata
    labels_source: str  # where the labels came from, for errors ("labels list", a file, ...)
    label_map: dict[str, str] | None  # model class name -> vocabulary label; None: identity
    label_map_source: str  # the file or "label_map" (the manifest's own mapping), for errors
    margin: float = 0.1  # crop margin, a fraction of the box's width/height on each side
    min_size: int = 32  # smallest crop side, source pixels, worth classifying
    edgetpu_file: Path | None = None
    license: str = ""
    description: str = ""


# -- the file's schema ------------------------------------------------------------------

_NORMALISE = ("mean", "std", "scale")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _three(value: Any, key: str) -> Any:
    """A number, or a list of 3 numbers (one per channel, in the model's channel order)."""
    if _number(value):
        return [float(value)] * 3
    if isinstance(value, list) and len(value) == 3 and all(_number(v) for v in value):
        return [float(v) for v in value]
    raise PydanticCustomError(key, "must be a number or a list of 3 numbers (one per channel), got {got}",
                              {"got": repr(value)})


class ClassifierInput(ManifestInput):
    """A detector's input keys, plus how a float32 input is normalised."""

    mean: Optional[list[float]] = Field(None, description="float32: subtracted from the pixels (0..255)")
    std: Optional[list[float]] = Field(None, description="float32: the pixels (0..255) are divided by it")
    scale: Optional[float] = Field(None, gt=0, description="float32: pixels (0..255) times scale")

    @field_validator("mean", "std", mode="before")
    @classmethod
    def _channels(cls, value: Any, info: ValidationInfo) -> Any:
        return None if value is None else _three(value, str(info.field_name))

    @field_validator("std")
    @classmethod
    def _std(cls, value: Optional[list[float]]) -> Optional[list[float]]:
        if value is not None and min(value) < 1.0:
            # 0..1 values (torchvision's 0.229, ...) are the usual slip: the pixels here are 0..255.
            raise PydanticCustomError(
                "std", "must be in pixel units (0..255) and at least 1, got {got}; for 0..1 values "
                       "(as torchvision gives them) multiply mean and std by 255", {"got": value})
        return value


class ClassifierOutput(BaseModel):
    model_config = _STRICT

    softmax: bool = Field(description="true: the model gives logits and the classifier applies a softmax; "
                                      "false: it gives probabilities (quantised ones are dequantised "
                                      "with the output tensor's own parameters)")


def _label_map_value(value: Any) -> Any:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and value and all(isinstance(k, str) and k and isinstance(v, str) and v
                                                 for k, v in value.items()):
        return value
    raise PydanticCustomError(
        "label_map", "must be a file name or a non-empty mapping of model class names to labels, got {got}",
        {"got": repr(value) if not isinstance(value, dict) else "a mapping with a non-string key or value"})


class ClassifierManifestFile(ModelFileKeys):
    """The keys of a classifier's model.yaml (docs/classify.md)."""

    kind: ClassVar[str] = "classifier"
    messages: ClassVar[dict[str, str]] = {
        **ManifestFile.messages,  # the input keys' words, as for detectors
        "output": "must be a mapping with softmax: true or false",
        "output.softmax": "must be true or false",
        "margin": "must be a number in [0, 1]",
        "min_size": "must be a positive integer (pixels)",
        "input.scale": "must be a positive number",
    }

    format: Format
    input: ClassifierInput
    output: ClassifierOutput
    labels: Union[list[str], str, None] = None
    label_map: Union[dict[str, str], str, None] = None
    margin: float = Field(0.1, ge=0.0, le=1.0)
    min_size: int = Field(32, ge=1)

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value):
            return value
        if isinstance(value, list) and value and all(isinstance(x, str) for x in value):
            return value
        raise PydanticCustomError(
            "labels", "must be a file name, tflite:<file inside the model> or a non-empty list of strings, "
                      "got {got}", {"got": repr(value)})

    @field_validator("label_map", mode="before")
    @classmethod
    def _label_map(cls, value: Any) -> Any:
        return None if value is None else _label_map_value(value)

    @field_validator("margin", mode="before")
    @classmethod
    def _margin(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PydanticCustomError("margin", "must be a number in [0, 1], got {got}", {"got": repr(value)})
        return float(value)

    @model_validator(mode="after")
    def _rules(self) -> "ClassifierManifestFile":
        problems = []
        given = [k for k in _NORMALISE if k in self.input.model_fields_set and getattr(self.input, k) is not None]
        if self.input.dtype != "float32":
            problems += [f"input.{k}: only applies to dtype float32 (uint8 models get the raw pixels)"
                         for k in given]
        elif "scale" in given and ("mean" in given or "std" in given):
            problems.append("input.scale: give either scale or mean/std, not both")
        if self.edgetpu_file is not None and self.format != "tflite":
            problems.append("edgetpu_file: only applies to format tflite")
        if self.labels is None and self.format != "onnx":
            problems.append(f"labels: required for format {self.format} (a file, {TFLITE_PREFIX}<file inside "
                            "the model> or a list); only onnx models may take them from their metadata")
        if isinstance(self.labels, str) and self.labels.startswith(TFLITE_PREFIX):
            if self.format != "tflite":
                problems.append(f"labels: {TFLITE_PREFIX} only applies to format tflite")
            elif not self.labels[len(TFLITE_PREFIX):]:
                problems.append(f"labels: {TFLITE_PREFIX} needs the name of the file inside the model, "
                                f"e.g. {TFLITE_PREFIX}labels.txt")
        if problems:
            raise PydanticCustomError("manifest_rules", "{detail}",
                                      {"detail": "; ".join(problems), "errors": tuple(problems)})
        return self


# -- loading ----------------------------------------------------------------------------

def _input_spec(i: ClassifierInput) -> ClassifierInputSpec:
    mean, std = (0.0, 0.0, 0.0), (255.0, 255.0, 255.0)
    if i.scale is not None:
        std = (1.0 / i.scale,) * 3
    if i.mean is not None:
        mean = tuple(i.mean)  # type: ignore[assignment]
    if i.std is not None:
        std = tuple(i.std)  # type: ignore[assignment]
    return ClassifierInputSpec(width=i.width, height=i.height, resize=i.resize, color=i.color,
                               layout=i.layout, dtype=i.dtype, mean=mean, std=std)  # type: ignore[arg-type]


def tflite_labels(where: str, model_file: Path, member: str) -> tuple[str, ...]:
    """Labels from a file packed inside a .tflite: TFLite models with metadata are also zip
    archives (the flatbuffer first, the associated files after it)."""
    try:
        with zipfile.ZipFile(model_file) as z:
            names = z.namelist()
            if member not in names:
                raise ApplianceError(
                    f"{where}: labels: {TFLITE_PREFIX}{member}: model {show_path(model_file)} has no {member} "
                    f"inside (it holds: {', '.join(names) or 'nothing'})")
            text = z.read(member).decode("utf-8")
    except zipfile.BadZipFile:
        raise ApplianceError(
            f"{where}: labels: {TFLITE_PREFIX}{member}: model {show_path(model_file)} has no files packed "
            "inside (no TFLite metadata); give the labels as a file or a list") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ApplianceError(f"{where}: labels: cannot read {member} inside {show_path(model_file)}: {e}") from None
    labels = parse_labels(text.splitlines())
    if not labels:
        raise ApplianceError(f"{where}: labels: {member} inside {show_path(model_file)} has no labels")
    return tuple(labels)


def _read_label_map(where: str, file: Path) -> dict[str, str]:
    from appliance.config.loader import YamlProblem, parse_yaml, read_text

    shown = show_path(file)
    try:
        raw = parse_yaml(read_text(file))
    except OSError as e:
        raise ApplianceError(f"{where}: label_map: cannot read {shown}: {e.strerror or e}") from None
    except YamlProblem as e:
        raise ApplianceError(f"{where}: label_map: {shown} is not readable YAML: {e.lines[0]}") from None
    bad = [f"{k!r}: {v!r}" for k, v in (raw.items() if isinstance(raw, dict) else [])
           if not (isinstance(k, str) and k and isinstance(v, str) and v)]
    if not isinstance(raw, dict) or not raw or bad:
        what = f"entries {', '.join(bad[:3])}" if bad else f"a {type(raw).__name__}"
        raise ApplianceError(f"{where}: label_map: {shown} must be a mapping of model class names to "
                             f"labels (text: text), got {what}")
    return raw


def load_manifest(name_or_path: str | os.PathLike, assets_dir: Path) -> ClassifierManifest:
    """Read and check a classifier manifest; the files it names are resolved and must exist.

    A bare name is models/<name>/model.yaml; else a model.yaml path (or its folder). The
    label map's keys are checked against the model's labels when the classifier is loaded
    (ONNX models may only have their labels in the model file)."""
    path = find_manifest(name_or_path)
    m = read_manifest(path, ClassifierManifestFile)
    where, manifest_dir, assets_dir = show_path(path), path.parent, Path(assets_dir)
    file = resolve_file(where, "file", m.file, manifest_dir, assets_dir)
    edgetpu_path = None
    if m.edgetpu_file is not None:  # optional at load, as for detectors: needed only with a Coral
        found = [c for c in (manifest_dir / m.edgetpu_file, assets_dir / m.edgetpu_file) if c.is_file()]
        edgetpu_path = (found[0] if found else assets_dir / m.edgetpu_file).resolve()
    if isinstance(m.labels, str) and m.labels.startswith(TFLITE_PREFIX):
        member = m.labels[len(TFLITE_PREFIX):]
        labels: tuple[str, ...] | None = tflite_labels(where, file, member)
        labels_source = f"{member} inside {show_path(file)}"
    else:
        labels = manifest_labels(m, path, assets_dir)  # type: ignore[arg-type]
        labels_source = ("the labels list" if isinstance(m.labels, list) else
                         show_path(resolve_file(where, "labels", m.labels, manifest_dir, assets_dir))
                         if m.labels else "the model's metadata")
    label_map, label_map_source = None, "label_map"
    if isinstance(m.label_map, dict):
        label_map = dict(m.label_map)
    elif isinstance(m.label_map, str):
        lm_file = resolve_file(where, "label_map", m.label_map, manifest_dir, assets_dir)
        label_map, label_map_source = _read_label_map(where, lm_file), show_path(lm_file)
    return ClassifierManifest(
        name=m.name,
        version=m.version,
        path=path,
        file=file,
        format=m.format,
        input=_input_spec(m.input),
        softmax=m.output.softmax,
        labels=labels,
        labels_source=labels_source,
        label_map=label_map,
        label_map_source=label_map_source,
        margin=float(m.margin),
        min_size=int(m.min_size),
        edgetpu_file=edgetpu_path,
        license=m.license,
        description=m.description,
    )
