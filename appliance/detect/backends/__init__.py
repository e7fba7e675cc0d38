"""Backends run a network; they differ only in how. Each runtime is imported lazily, so a
missing runtime matters only to the backend that needs it.

Every backend returns an object with this shape (see Backend). A TensorRT backend is a new
module here with an open_backend(manifest, threads) function, plus one line in OPENERS;
manifests already accept format 'engine' for it.

Backends run detectors (appliance/detect/) and classifiers (appliance/classify/) alike: what
they need of a manifest is `RunnableModel`, which both kinds of manifest are.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol

import numpy as np

from appliance.detect.manifest import InputSpec, show_path
from appliance.errors import ApplianceError

# backend name -> module with open_backend(manifest, threads) -> Backend
OPENERS = {
    "litert": "appliance.detect.backends.litert",
    "onnxruntime": "appliance.detect.backends.onnxrt",
    # "tensorrt": "appliance.detect.backends.tensorrt",  # format engine, not written yet
}
FORMAT_BACKEND = {"tflite": "litert", "onnx": "onnxruntime", "engine": "tensorrt"}
BACKENDS = ("auto", "litert", "onnxruntime", "tensorrt")


class RunnableModel(Protocol):
    """What a backend reads of a manifest (detect.manifest.ModelManifest,
    classify.manifest.ClassifierManifest)."""

    path: Path  # the model.yaml, named in errors
    file: Path  # the weights, resolved
    format: str  # tflite | onnx | engine
    input: InputSpec  # width, height, layout, dtype are checked against the model
    edgetpu_file: Path | None  # tflite: used instead of `file` when a Coral is found


class Backend(Protocol):
    name: str  # "litert", "onnxruntime"
    device: str  # "cpu", "edgetpu", "cuda"
    model_file: Path  # the file actually loaded (the Edge TPU one when a Coral is used)
    input_shape: tuple[int, ...]  # -1 for a dynamic dimension
    output_shapes: list[tuple[int, ...]]  # declared; -1 for a dynamic dimension
    output_names: list[str]
    max_batch: int | None  # frames per run(); None: any number
    fixed_batch: bool  # True: run() must get exactly max_batch frames
    metadata: dict[str, str]  # model metadata (ONNX custom metadata), may be empty
    threads: int  # CPU inference threads asked of the runtime (detect.threads, resolved)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """One inference on a [B, ...] tensor in the manifest's dtype; outputs as float arrays."""
        ...


def open_backend(manifest: RunnableModel, backend: str = "auto", threads: int = 1) -> Backend:
    if backend not in BACKENDS:
        raise ApplianceError(f"backend: must be one of {', '.join(BACKENDS)}, got {backend!r}")
    wanted = FORMAT_BACKEND[manifest.format]
    if backend != "auto" and backend != wanted:
        raise ApplianceError(
            f"backend {backend} cannot run {show_path(manifest.file)} (format {manifest.format}); "
            f"use backend {wanted} or auto"
        )
    if wanted not in OPENERS:
        raise ApplianceError(
            f"{show_path(manifest.path)}: format {manifest.format} needs the {wanted} backend, "
            "which this version of the appliance does not have"
        )
    module = importlib.import_module(OPENERS[wanted])
    return module.open_backend(manifest, threads)


def dims(shape) -> tuple[int, ...]:
    """A declared shape with unknown dimensions (None, -1, symbolic names) as -1."""
    return tuple(d if isinstance(d, (int, np.integer)) and d >= 0 else -1 for d in shape)


def check_input(manifest: RunnableModel, shape: tuple[int, ...], dtype: str,
                float_ok: tuple[str, ...] = ("float32",)) -> None:
    """The manifest's input must agree with what the model file declares.

    float_ok: model input dtypes the backend can convert manifest float32 (0..1) into.
    """
    spec: InputSpec = manifest.input
    where = show_path(manifest.path)
    if len(shape) != 4:
        raise ApplianceError(
            f"{where}: model {show_path(manifest.file)} has input shape {shape}; expected a "
            "4-D image tensor"
        )
    hwc = (shape[1], shape[2], shape[3]) if spec.layout == "nhwc" else (shape[2], shape[3], shape[1])
    want = (spec.height, spec.width, 3)
    if any(g not in (-1, w) for g, w in zip(hwc, want)):
        raise ApplianceError(
            f"{where}: input: says {spec.width}x{spec.height} {spec.layout} but model "
            f"{show_path(manifest.file)} declares input shape {shape}"
        )
    ok = ("uint8",) if spec.dtype == "uint8" else float_ok
    if dtype not in ok:
        raise ApplianceError(
            f"{where}: input.dtype: says {spec.dtype} but model {show_path(manifest.file)} "
            f"takes {dtype}"
        )
