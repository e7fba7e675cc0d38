"""Backends run a network; they differ only in how. Each runtime is imported lazily, so a
missing runtime matters only to the backend that needs it.

Every backend returns an object with this shape (see Backend). A backend is a module here
with an open_backend(manifest, threads) function, plus one line in OPENERS. TensorRT
(backends/tensorrt.py; engines from detect/engine_build.py) also takes the engine options
(cache folder, precision, DLA, calibration): it runs `engine` models and builds engines
from `onnx` ones.

`auto` picks by the model's format; for an `onnx` detector it picks TensorRT where TensorRT
imports and a GPU is present, else ONNX Runtime (which uses its CUDA provider when it has
one, else the CPU), and says why in one log line.

Backends run detectors (appliance/detect/) and classifiers (appliance/classify/) alike: what
they need of a manifest is `RunnableModel`, which both kinds of manifest are.
"""
from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from appliance.detect.manifest import InputSpec, show_path
from appliance.errors import ApplianceError

if TYPE_CHECKING:
    from appliance.detect.engine_cache import EngineOptions

log = logging.getLogger(__name__)

# backend name -> module with open_backend(manifest, threads) -> Backend
OPENERS = {
    "litert": "appliance.detect.backends.litert",
    "onnxruntime": "appliance.detect.backends.onnxrt",
    "tensorrt": "appliance.detect.backends.tensorrt",
}
FORMAT_BACKEND = {"tflite": "litert", "onnx": "onnxruntime", "engine": "tensorrt"}  # each format's own
RUNS = {"litert": ("tflite",), "onnxruntime": ("onnx",), "tensorrt": ("onnx", "engine")}  # formats each runs
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
    name: str  # "litert", "onnxruntime", "tensorrt"
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


def choose(fmt: str, backend: str = "auto", engines: bool = True) -> tuple[str, str]:
    """(the backend that runs a model of format `fmt`, why when auto passed TensorRT over).

    engines: the caller can give TensorRT its engine options (detectors can; classifiers
    stay on their format's backend)."""
    if backend != "auto":
        return backend, ""
    if fmt == "onnx" and engines:
        from appliance.detect.engine_build import unavailable

        why = unavailable()
        return ("tensorrt", "") if why is None else ("onnxruntime", why)
    return FORMAT_BACKEND[fmt], ""


def open_backend(manifest: RunnableModel, backend: str = "auto", threads: int = 1,
                 engine: EngineOptions | None = None) -> Backend:
    """engine: TensorRT's options; None keeps `auto` off TensorRT (classifiers)."""
    if backend not in BACKENDS:
        raise ApplianceError(f"backend: must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend != "auto" and manifest.format not in RUNS[backend]:
        wanted = FORMAT_BACKEND[manifest.format]
        raise ApplianceError(
            f"backend {backend} cannot run {show_path(manifest.file)} (format {manifest.format}); "
            f"use backend {wanted} or auto"
        )
    name, why = choose(manifest.format, backend, engines=engine is not None or backend == "tensorrt")
    if why:
        log.info("detect.backend auto: not TensorRT (%s); %s runs on ONNX Runtime", why, manifest.file.name)
    if name == "tensorrt":
        from appliance.detect.engine_build import unavailable

        problem = unavailable()
        if problem:
            what = (f"{show_path(manifest.path)}: format engine needs TensorRT" if backend == "auto"
                    else "detect.backend: tensorrt needs TensorRT")
            raise ApplianceError(f"{what}, which cannot run here: {problem}; "
                                 + ("use an onnx model" if backend == "auto" else "use auto or onnxruntime"))
    module = importlib.import_module(OPENERS[name])
    if name == "tensorrt":
        return module.open_backend(manifest, threads, engine)
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
