"""TensorRT backend: runs an engine that engine_build.py built (or found in the cache).

Name-based tensor I/O (num_io_tensors, get_tensor_name/mode/shape, set_input_shape,
set_tensor_address) and execute_async_v3, with execute_async_v2 and bindings where an
older TensorRT lacks it; device buffers and the stream from cuda-python's runtime API.
TensorRT is imported only when this backend is used.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from appliance.detect import engine_cache as cache
from appliance.detect.backends import RunnableModel, check_input
from appliance.detect.engine_build import _call, _cudart, _tensorrt, ensure_engine, manifest_at_size, unavailable
from appliance.detect.engine_cache import EngineOptions
from appliance.detect.manifest import show_path
from appliance.errors import ApplianceError

__all__ = ["TensorRTBackend", "open_backend", "unavailable"]

log = logging.getLogger(__name__)


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, manifest: RunnableModel, threads: int, options: EngineOptions):
        trt = _tensorrt()
        cudart = self._cudart = _cudart()
        why = unavailable()
        if why:
            raise ApplianceError(f"detect.backend: tensorrt cannot run here: {why}")
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        if options.dla_core is not None:
            runtime.DLA_core = options.dla_core
        path, how = ensure_engine(manifest, options)
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None and how == "cache":
            # Its record said it fits, TensorRT disagrees: build it again, once.
            log.warning("tensorrt: TensorRT refused the cached engine %s; rebuilding it", show_path(path))
            cache.remove(path)
            path, how = ensure_engine(manifest, options)
            engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise ApplianceError(f"{show_path(path)}: TensorRT refused to load this engine ({how}); "
                                 "its log above says why")
        self._trt, self._runtime, self._engine = trt, runtime, engine  # the context needs them alive
        self._manifest, self._options = manifest, options
        self._context = engine.create_execution_context()
        self.model_file: Path = path
        self.engine_source = how  # cache | built | prebuilt
        self.device = "cuda" if options.dla_core is None else f"dla{options.dla_core}"
        self.threads = 1  # the CPU only feeds the GPU
        self.metadata: dict[str, str] = {}
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1:
            raise ApplianceError(f"{show_path(path)}: has {len(inputs)} inputs; the appliance's models take one image")
        self._input = inputs[0]
        self._in_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self._input)))
        self.input_shape = tuple(int(d) for d in engine.get_tensor_shape(self._input))
        check_input(manifest, self.input_shape, self._in_dtype.name, float_ok=("float32", "float16"))
        if -1 in self.input_shape[:1]:
            hi = tuple(int(d) for d in engine.get_tensor_profile_shape(self._input, 0)[2])
            self.max_batch, self.fixed_batch = hi[0], False
        else:
            self.max_batch, self.fixed_batch = self.input_shape[0], True
        self.output_names = list(self._outputs)
        self.output_shapes = [tuple(int(d) for d in engine.get_tensor_shape(n)) for n in self._outputs]
        self._out_dtypes = [np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in self._outputs]
        self._stream = _call(cudart, "cudaStreamCreate")
        self._batch = 0
        self._device: dict[str, Any] = {}  # tensor name -> device pointer
        self._host: list[np.ndarray] = []
        self._v3 = hasattr(self._context, "execute_async_v3")
        log.info("tensorrt %s: loaded %s (%s) on %s", trt.__version__, path.name, how, self.device)

    def at_size(self, spec) -> "TensorRTBackend":
        """This model at another input size (a manifest's input_sizes, detector.py): an
        engine of its own, built once (minutes: `appliance model build` builds every size
        ahead), then cached."""
        m = manifest_at_size(self._manifest, spec, self._options.cache_dir.parent / "resized")
        return TensorRTBackend(m, self.threads, self._options)

    def _allocate(self, batch: int) -> None:
        """Device buffers for a batch size; outputs' shapes follow from the input's."""
        cudart, ctx = self._cudart, self._context
        self._free_device()
        in_shape = (batch, *self.input_shape[1:])
        ctx.set_input_shape(self._input, in_shape)
        sizes = {self._input: int(np.prod(in_shape)) * self._in_dtype.itemsize}
        self._host = []
        for name, dtype in zip(self._outputs, self._out_dtypes):
            shape = tuple(int(d) for d in ctx.get_tensor_shape(name))
            self._host.append(np.empty(shape, dtype))
            sizes[name] = self._host[-1].nbytes
        for name, nbytes in sizes.items():
            self._device[name] = _call(cudart, "cudaMalloc", max(1, nbytes))
            if self._v3:
                ctx.set_tensor_address(name, int(self._device[name]))
        self._batch = batch

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        cudart = self._cudart
        x = np.ascontiguousarray(x, self._in_dtype)
        if x.shape[0] != self._batch:
            self._allocate(x.shape[0])
        h2d, d2h = (cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost)
        _call(cudart, "cudaMemcpyAsync", self._device[self._input], x.ctypes.data, x.nbytes, h2d, self._stream)
        if self._v3:
            ok = self._context.execute_async_v3(int(self._stream))
        else:  # bindings in engine order
            order = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
            ok = self._context.execute_async_v2([int(self._device[n]) for n in order], int(self._stream))
        if not ok:
            raise ApplianceError(f"{self.model_file.name}: TensorRT inference failed")
        for name, host in zip(self._outputs, self._host):
            _call(cudart, "cudaMemcpyAsync", host.ctypes.data, self._device[name], host.nbytes, d2h, self._stream)
        _call(cudart, "cudaStreamSynchronize", self._stream)
        return [h.astype(np.float32) for h in self._host]  # fresh arrays: the buffers are reused

    def _free_device(self) -> None:
        for ptr in self._device.values():
            self._cudart.cudaFree(ptr)
        self._device = {}

    def close(self) -> None:
        self._free_device()
        if getattr(self, "_stream", None) is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the CUDA bindings may be gone already
            pass


def open_backend(manifest: RunnableModel, threads: int, engine: EngineOptions | None = None) -> TensorRTBackend:
    if engine is None:
        from appliance import paths

        engine = EngineOptions(cache_dir=paths.data_dir(None) / cache.ENGINES_DIR)
    return TensorRTBackend(manifest, threads, engine)
