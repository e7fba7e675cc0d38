"""ONNX Runtime backend: CUDA when this onnxruntime build has it, else CPU.

InferenceSession.run() releases the GIL (checked in tests/integration/test_detect_gil.py).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from appliance.detect.backends import RunnableModel, check_input, dims
from appliance.detect.manifest import show_path
from appliance.errors import ApplianceError

log = logging.getLogger(__name__)

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8,
           "tensor(double)": np.float64}


class OnnxBackend:
    name = "onnxruntime"

    def __init__(self, manifest: RunnableModel, threads: int):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ApplianceError(
                "backend onnxruntime needs ONNX Runtime: pip install onnxruntime "
                "(or onnxruntime-gpu)"
            ) from None
        self.model_file: Path = manifest.file
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # errors only; ORT warns about benign graph rewrites
        # Spinning worker threads would burn the cores the pipeline's other stages need.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        available = ort.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self._session = ort.InferenceSession(str(manifest.file), opts, providers=providers)
        except Exception as e:  # ORT raises its own pybind classes (InvalidProtobuf, Fail, ...)
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ApplianceError(
                f"{show_path(manifest.file)}: not a loadable ONNX model ({msg})"
            ) from None
        used = self._session.get_providers()
        self.device = "cuda" if used and used[0] == "CUDAExecutionProvider" else "cpu"
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ApplianceError(
                f"{show_path(manifest.file)}: has {len(inputs)} inputs; the appliance's models take one image"
            )
        inp = inputs[0]
        self._in_name = inp.name
        if inp.type not in _DTYPES:
            raise ApplianceError(
                f"{show_path(manifest.file)}: input {inp.name} is {inp.type}; "
                f"supported: {', '.join(_DTYPES)}"
            )
        self._in_dtype = np.dtype(_DTYPES[inp.type])  # fp16 exports want float16 fed
        self.input_shape = dims(inp.shape)
        check_input(manifest, self.input_shape, self._in_dtype.name,
                    float_ok=("float32", "float16", "float64"))
        outs = self._session.get_outputs()
        self.output_names = [o.name for o in outs]
        self.output_shapes = [dims(o.shape) for o in outs]
        batch = self.input_shape[0]
        self.max_batch = None if batch == -1 else batch
        self.fixed_batch = batch != -1
        self.metadata = dict(self._session.get_modelmeta().custom_metadata_map)
        self.threads = threads  # CPU inference threads asked of the runtime
        log.info("onnxruntime: loaded %s on %s (%s), %d thread(s)", manifest.file.name,
                 self.device, ",".join(used), threads)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        if x.dtype != self._in_dtype:
            x = x.astype(self._in_dtype)
        return self._session.run(None, {self._in_name: x})


def open_backend(manifest: RunnableModel, threads: int) -> OnnxBackend:
    return OnnxBackend(manifest, threads)
