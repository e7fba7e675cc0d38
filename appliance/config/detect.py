"""`detect`: the model and how it runs (appliance/detect/)."""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from appliance.config.base import FileCheck, Problems, Section, Text, key
from appliance.errors import ApplianceError

DEFAULT_CLASSES = ("person", "bicycle", "car", "motorcycle", "bus", "truck")

Threads = Union[Literal["auto"], Annotated[int, Field(ge=1, le=64)]]


class DetectConfig(Section):
    model: Text = key("ssd-mobilenet-v2",
                      doc="a folder under `models/`, or the path of a `model.yaml` (see models/README.md)")
    backend: Literal["auto", "litert", "onnxruntime"] = key(
        "auto", doc="`auto` picks by the model file's format; `litert` runs `tflite` models, "
                    "`onnxruntime` runs `onnx` ones")
    threshold: float = key(0.5, lo=0.0, hi=1.0, doc="minimum detection score")
    classes: list[Text] = key(
        factory=lambda: list(DEFAULT_CLASSES), type="list of labels", shown=", ".join(DEFAULT_CLASSES),
        doc="labels to keep; `[]` keeps all; an unknown label is an error that lists the valid ones")
    threads: Threads = key("auto", doc="inference threads; auto: measured/chosen at start for the most "
                                       "pipeline throughput")


def check_model(d: DetectConfig, files: FileCheck, p: Problems) -> None:
    """The model must resolve to a manifest, its files must be here (or, with --no-files,
    on the device), the backend must run its format, and the classes must be its labels."""
    from appliance.detect import manifest as mf
    from appliance.detect.backends import FORMAT_BACKEND

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
    if d.backend != "auto" and d.backend != wanted:
        p.add("detect.backend", f"{d.backend} cannot run model {d.model} (format {m.format}, file {m.file}); "
                                f"use backend {wanted} or auto")
    where = mf.show_path(path)
    try:
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
