"""LiteRT (TensorFlow Lite) backend, with a Coral Edge TPU when one is plugged in.

Interpreter.invoke() releases the GIL (checked in tests/integration/test_detect_gil.py),
so inference overlaps Python work on other threads.
"""
from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import numpy as np

from appliance.detect.backends import RunnableModel, check_input
from appliance.detect.manifest import show_path
from appliance.errors import ApplianceError

log = logging.getLogger(__name__)

EDGETPU_LIB = "libedgetpu.so.1"


def _runtime():
    try:
        from ai_edge_litert.interpreter import Interpreter, load_delegate
    except ImportError:
        try:  # the older standalone runtime, still what some boards ship
            from tflite_runtime.interpreter import Interpreter, load_delegate  # type: ignore
        except ImportError:
            raise ApplianceError(
                "backend litert needs the LiteRT runtime: pip install ai-edge-litert"
            ) from None
    return Interpreter, load_delegate


def _edgetpu_delegate(load_delegate, manifest: RunnableModel):
    if manifest.edgetpu_file is None:
        return None
    try:
        # Probe the library first: a failed load_delegate() leaves a half-built Delegate
        # whose __del__ prints a spurious traceback to stderr.
        ctypes.CDLL(EDGETPU_LIB)
        delegate = load_delegate(EDGETPU_LIB)
    except (ValueError, OSError, RuntimeError) as e:
        log.info("no Coral Edge TPU found (%s: %s); running %s on the CPU",
                 EDGETPU_LIB, str(e).splitlines()[0] if str(e) else type(e).__name__,
                 manifest.file.name)
        return None
    if not manifest.edgetpu_file.is_file():
        log.warning("Coral Edge TPU found but %s is missing (run 'appliance fetch'); "
                    "running %s on the CPU", show_path(manifest.edgetpu_file), manifest.file.name)
        return None
    return delegate


class LiteRTBackend:
    name = "litert"

    def __init__(self, manifest: RunnableModel, threads: int):
        Interpreter, load_delegate = _runtime()
        delegate = _edgetpu_delegate(load_delegate, manifest)
        self.model_file: Path = manifest.edgetpu_file if delegate else manifest.file  # type: ignore
        self.device = "edgetpu" if delegate else "cpu"
        try:
            self._interp = Interpreter(
                model_path=str(self.model_file),
                num_threads=threads,
                experimental_delegates=[delegate] if delegate else None,
            )
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ApplianceError(
                f"{show_path(self.model_file)}: not a loadable TFLite model "
                f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})"
            ) from None
        inputs = self._interp.get_input_details()
        if len(inputs) != 1:
            raise ApplianceError(
                f"{show_path(self.model_file)}: has {len(inputs)} inputs; the appliance's models take one image"
            )
        inp = inputs[0]
        self._in_index = inp["index"]
        self._in_dtype = np.dtype(inp["dtype"])
        self._in_quant = inp["quantization"]  # (scale, zero_point); scale 0: not quantized
        self.input_shape = tuple(int(d) for d in inp["shape_signature"])
        check_input(manifest, self.input_shape, self._in_dtype.name,
                    float_ok=("float32", "int8", "uint8"))
        self._float_to_quant = manifest.input.dtype == "float32" and self._in_dtype != np.float32
        if self._float_to_quant and not self._in_quant[0]:
            raise ApplianceError(
                f"{show_path(manifest.path)}: input.dtype: says float32 but model "
                f"{show_path(self.model_file)} takes {self._in_dtype.name} without quantization"
            )
        outs = self._interp.get_output_details()
        self._out = [(d["index"], d["quantization"], np.dtype(d["dtype"])) for d in outs]
        self.output_names = [d["name"] for d in outs]
        self.output_shapes = [tuple(int(x) for x in d["shape_signature"]) for d in outs]
        # Batch 1: the in-graph SSD post-processing, and most TFLite detectors, are batch 1.
        self.max_batch = 1
        self.fixed_batch = True
        self.metadata: dict[str, str] = {}
        self.threads = threads  # CPU inference threads asked of the runtime
        log.info("litert: loaded %s on %s, %d thread(s)", self.model_file.name, self.device, threads)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        if self._float_to_quant:
            scale, zero = self._in_quant
            info = np.iinfo(self._in_dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(self._in_dtype)
        self._interp.set_tensor(self._in_index, x)
        self._interp.invoke()
        outputs = []
        for index, (scale, zero), dtype in self._out:
            y = self._interp.get_tensor(index)
            if scale and dtype != np.float32:  # quantized outputs: back to real values
                y = (y.astype(np.float32) - zero) * scale
            outputs.append(y)
        return outputs


def open_backend(manifest: RunnableModel, threads: int) -> LiteRTBackend:
    return LiteRTBackend(manifest, threads)
