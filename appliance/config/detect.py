"""`detect`: the model and how it runs (appliance/detect/)."""
from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import Field, model_validator

from appliance.config.base import FileCheck, OptionalText, Problems, Section, Text, key
from appliance.errors import ApplianceError

DEFAULT_CLASSES = ("person", "bicycle", "car", "motorcycle", "bus", "truck")

Threads = Union[Literal["auto"], Annotated[int, Field(ge=1, le=64)]]


class DetectConfig(Section):
    model: Text = key("ssd-mobilenet-v2",
                      doc="a folder under `models/`, or the path of a `model.yaml` (see models/README.md)")
    backend: Literal["auto", "litert", "onnxruntime", "tensorrt"] = key(
        "auto", doc="`auto` picks by the model file's format: `tflite` on LiteRT; `onnx` on TensorRT where "
                    "TensorRT and a GPU are present, else ONNX Runtime (its CUDA provider when it has one, "
                    "else the CPU); `engine` on TensorRT. `litert` runs `tflite` models, `onnxruntime` "
                    "`onnx` ones, `tensorrt` `onnx` (building an engine, docs/tensorrt.md) and `engine` ones")
    threshold: float = key(0.5, lo=0.0, hi=1.0, doc="minimum detection score")
    classes: list[Text] = key(
        factory=lambda: list(DEFAULT_CLASSES), type="list of labels", shown=", ".join(DEFAULT_CLASSES),
        doc="labels to keep; `[]` keeps all; an unknown label is an error that lists the valid ones")
    threads: Threads = key("auto", doc="inference threads; auto: measured/chosen at start for the most "
                                       "pipeline throughput")
    precision: Literal["fp16", "int8", "fp32"] = key(
        "fp16", doc="TensorRT only: the engine's precision; `int8` needs `detect.calibration_source`")
    dla_core: Optional[Annotated[int, Field(ge=0, le=7)]] = key(
        None, type="integer or null", doc="TensorRT only: run the engine on this DLA core (Jetson Orin: 0 "
                                          "or 1), layers it cannot run on the GPU; needs fp16 or int8")
    calibration_source: OptionalText = key(
        None, type="string or null", doc="TensorRT int8 only: frames to calibrate on, like the cameras' "
                                         "views: a folder of images, a video file, or `camera:ID`")

    @model_validator(mode="after")
    def _engine_rules(self) -> "DetectConfig":
        p = Problems()
        trt_keys = [k for k in ("precision", "dla_core", "calibration_source") if k in self.model_fields_set
                    and getattr(self, k) not in (None, "fp16")]
        if self.backend in ("litert", "onnxruntime"):
            for k in trt_keys:
                p.add(k, f"only applies to the TensorRT backend (detect.backend auto or tensorrt), "
                         f"not {self.backend}")
        if self.precision == "int8" and not self.calibration_source:
            p.add("calibration_source", "required for precision int8: a folder of images, a video file "
                                        "or camera:ID")
        if self.calibration_source and self.precision != "int8":
            p.add("calibration_source", f"only applies to precision int8, not {self.precision}")
        if self.dla_core is not None and self.precision == "fp32":
            p.add("dla_core", "the DLA runs fp16 or int8 only; set detect.precision to fp16 or int8")
        p.raise_any()
        return self


def check_model(d: DetectConfig, files: FileCheck, p: Problems) -> None:
    """The model must resolve to a manifest, its files must be here (or, with --no-files,
    on the device), the backend must run its format, and the classes must be its labels."""
    from appliance.detect import manifest as mf
    from appliance.detect.backends import FORMAT_BACKEND, RUNS

    try:
        path = mf.find_manifest(d.model)
    except ApplianceError as e:
        if mf.looks_like_path(d.model):
            files.missing(p, "detect.model", str(e))
        else:
            p.add("detect.model", str(e))  # models/ ships with the appliance: not a device file
        return
    try:
        m = mf.read_manifest(path)
    except ApplianceError as e:
        p.add("detect.model", str(e).replace("\n", "; "))
        return
    wanted = FORMAT_BACKEND[m.format]
    if d.backend != "auto" and m.format not in RUNS[d.backend]:
        p.add("detect.backend", f"{d.backend} cannot run model {d.model} (format {m.format}, file {m.file}); "
                                f"use backend {wanted} or auto")
    if d.backend == "tensorrt" or m.format == "engine":
        _check_tensorrt(d, m.format, files, p)
    where = mf.show_path(path)
    try:
        if m.onnx_file is not None:  # format engine: the engine may be built from it here
            mf.resolve_file(where, "onnx_file", m.onnx_file, path.parent, files.assets_dir)
        else:
            mf.resolve_file(where, "file", m.file, path.parent, files.assets_dir)
    except ApplianceError as e:
        files.missing(p, "detect.model", str(e))
    if not d.classes:
        return
    try:
        labels = mf.manifest_labels(m, path, files.assets_dir)
    except ApplianceError as e:
        files.warn("detect.classes", f"not checked against the model's labels: {e}")
        return
    if labels is None:
        files.warn("detect.classes", f"not checked against the model's labels: model {m.name} "
                                     "takes them from its ONNX metadata, read at start")
        return
    known = {name.lower() for name in labels if name}
    unknown = [c for c in d.classes if c.strip().lower() not in known]
    if unknown:
        p.add("detect.classes", f"{', '.join(repr(c) for c in unknown)} not a label of model {m.name}; "
                                f"valid: {', '.join(n for n in labels if n)}")


def _check_tensorrt(d: DetectConfig, fmt: str, files: FileCheck, p: Problems) -> None:
    """TensorRT asked for (detect.backend: tensorrt, or a format engine model) where it
    cannot run: an error for `run` and `config check`; a warning with --no-files (the
    config is for another machine, a Jetson)."""
    from appliance.detect.engine_build import unavailable

    why = unavailable()
    if why is None:
        return
    key_name = "detect.backend" if d.backend == "tensorrt" else "detect.model"
    what = "tensorrt" if d.backend == "tensorrt" else f"model {d.model} is format {fmt}, which"
    message = f"{what} needs TensorRT, which cannot run here: {why}"
    if files.mode == "error":
        p.add(key_name, message + ("; use auto or onnxruntime" if d.backend == "tensorrt" else ""))
    else:
        files.warn(key_name, message + " (--no-files: it must run on the device)")


def check_calibration(d: DetectConfig, camera_ids: list[str], files: FileCheck, p: Problems) -> None:
    """detect.calibration_source must name a camera of the config, or a folder or video file here."""
    src = d.calibration_source
    if not src or d.precision != "int8":
        return
    if src.startswith("camera:"):
        if src[len("camera:"):] not in camera_ids:
            p.add("detect.calibration_source", f"{src}: no camera {src[len('camera:'):]!r} in cameras[] "
                                               f"(cameras: {', '.join(camera_ids) or 'none'})")
        return
    from pathlib import Path

    if not Path(src).expanduser().exists():
        files.missing(p, "detect.calibration_source",
                      f"{src}: not a folder of images, a video file or camera:ID (no such file or folder)")
