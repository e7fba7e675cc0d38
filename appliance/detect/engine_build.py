"""Building TensorRT engines: from a model's ONNX file to a cached engine.

Written against TensorRT's Python API as JetPack 6 ships it (8.6) and 10.x: the ONNX
parser, builder config flags (FP16, INT8 with an IInt8EntropyCalibrator2 and its
calibration cache, DLA with GPU fallback), optimisation profiles for dynamic inputs,
IProgressMonitor where it exists, and build_serialized_network. GPU memory (calibration
batches) and the device's identity come from cuda-python's runtime API.

TensorRT and cuda-python are imported only inside these functions, so this module
imports anywhere; `unavailable()` says cheaply whether they can run here. The engine
cache (engine_cache.py) decides whether a cached engine may be loaded; ensure_engine
builds when none may. Builds take minutes on a Jetson Nano: progress goes to the log
every 10 %, to `options.progress` (the CLI's bar) and to engine_cache.BUILDS (status).
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from appliance.assets import sha256_of
from appliance.detect import engine_cache as cache
from appliance.detect.engine_cache import EngineKey, EngineOptions
from appliance.detect.manifest import show_path
from appliance.errors import ApplianceError

if TYPE_CHECKING:
    from appliance.detect.backends import RunnableModel

log = logging.getLogger(__name__)

HEARTBEAT_S = 30.0  # a TensorRT without progress callbacks: log that the build goes on


def _tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise ApplianceError(
            f"detect.backend: tensorrt needs TensorRT's Python package, which is not importable "
            f"here ({e}); on a Jetson it comes with JetPack (python3-libnvinfer), elsewhere "
            "pip install tensorrt; or set detect.backend to auto or onnxruntime"
        ) from None
    return trt


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python 12.6 and later
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[no-redef]  # older cuda-python
        except ImportError as e:
            raise ApplianceError(
                f"detect.backend: tensorrt needs cuda-python for GPU memory ({e}); "
                "pip install cuda-python (the major version of the device's CUDA, e.g. 12)"
            ) from None
    return cudart


def _call(cudart, fn: str, *args) -> Any:
    """A cudart call: its values, or an ApplianceError naming the call and the CUDA error."""
    result = getattr(cudart, fn)(*args)
    err, values = result[0], result[1:]
    if err != cudart.cudaError_t.cudaSuccess:
        raise ApplianceError(f"CUDA {fn} failed: {getattr(err, 'name', err)}")
    return values[0] if len(values) == 1 else values


@functools.lru_cache(maxsize=1)
def unavailable() -> str | None:
    """Why TensorRT cannot run here, in a few words; None when it can. Cheap (imports
    and a device count, no build), remembered for the process."""
    try:
        import tensorrt as trt
    except ImportError as e:
        return f"TensorRT is not installed ({e})"
    except Exception as e:  # a broken install (missing libnvinfer) raises OSError and others
        return f"TensorRT does not load ({type(e).__name__}: {e})"
    try:
        cudart = _cudart()
    except ApplianceError:
        return f"TensorRT {trt.__version__} is installed but cuda-python is not (pip install cuda-python)"
    try:
        count = _call(cudart, "cudaGetDeviceCount")
    except ApplianceError as e:
        return f"no usable GPU ({e})"
    return None if count > 0 else "no GPU found"


def device_identity() -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") of CUDA device 0."""
    cudart = _cudart()
    device = _call(cudart, "cudaGetDevice")
    prop = _call(cudart, "cudaGetDeviceProperties", device)
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    return name.rstrip("\x00").strip(), f"{prop.major}.{prop.minor}"


# -- building ------------------------------------------------------------------------------


def _parse_onnx(trt, onnx_file: Path, logger):
    builder = trt.Builder(logger)
    flag = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)  # 8.x needs it; 10 ignores
    network = builder.create_network(0 if flag is None else 1 << int(flag))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_file.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or "no reason given"
        raise ApplianceError(f"{show_path(onnx_file)}: TensorRT cannot parse this ONNX model ({errors})")
    if network.num_inputs != 1:
        raise ApplianceError(f"{show_path(onnx_file)}: has {network.num_inputs} inputs; "
                             "the appliance's models take one image")
    return builder, network, parser


def _shapes(manifest: RunnableModel, declared: tuple[int, ...], max_batch: int
            ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) input shapes: declared dimensions as they are; a dynamic batch
    1..max_batch; dynamic height and width the manifest's size."""
    spec = manifest.input
    hw = {2: spec.height, 3: spec.width} if spec.layout == "nchw" else {1: spec.height, 2: spec.width}
    lo, hi = [], []
    for i, d in enumerate(declared):
        if d >= 0:
            lo.append(d)
            hi.append(d)
        elif i == 0:
            lo.append(1)
            hi.append(max_batch)
        elif i in hw:
            lo.append(hw[i])
            hi.append(hw[i])
        else:
            raise ApplianceError(f"{show_path(manifest.file)}: input dimension {i} is dynamic; only "
                                 "the batch, height and width may be")
    return tuple(lo), tuple(hi), tuple(hi)


def _progress_monitor(trt, report: Callable[[float], None]):
    """An IProgressMonitor turning TensorRT's nested phases into one fraction 0..1."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.lock = threading.Lock()
            self.phases: dict[str, list] = {}  # name -> [parent, steps, done]

        def _fraction(self, name: str) -> float:
            parent, steps, done = self.phases[name]
            child = next((n for n, p in self.phases.items() if p[0] == name), None)
            inner = self._fraction(child) if child else 0.0
            return min(1.0, (done + inner) / max(1, steps))

        def _report(self) -> None:
            roots = [n for n, p in self.phases.items() if p[0] is None]
            if roots:
                report(self._fraction(roots[0]))

        def phase_start(self, phase_name, parent_phase, num_steps):
            with self.lock:
                self.phases[phase_name] = [parent_phase, num_steps, 0]
                self._report()

        def step_complete(self, phase_name, step):
            with self.lock:
                if phase_name in self.phases:
                    self.phases[phase_name][2] = step + 1
                    self._report()
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            with self.lock:
                self.phases.pop(phase_name, None)

    return Monitor()


def _calibrator(trt, manifest: RunnableModel, options: EngineOptions, batch: int, cache_file: Path):
    """An IInt8EntropyCalibrator2 over frames from the calibration source, reading and
    writing TensorRT's calibration cache at cache_file (so the frames are sampled once)."""
    from appliance.detect import calibration, preprocess

    cudart = _cudart()
    feeds: list[Callable[[], np.ndarray]] = []
    if not cache_file.is_file():
        src = calibration.resolve(options.calibration_source or "", options.cameras, options.assets_dir)
        frames = calibration.sample(src, options.calibration_frames, manifest.input.width,
                                    manifest.input.height, options.assets_dir)
        feeds = calibration.batches(frames, batch,
                                    lambda fs: preprocess.prepare(fs, manifest.input)[0])  # type: ignore[arg-type]

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.next = 0
            self.ptr = None
            self.nbytes = 0

        def get_batch_size(self):
            return batch

        def get_batch(self, names):
            if self.next >= len(feeds):
                return None  # no more batches: TensorRT computes the ranges now
            x = np.ascontiguousarray(feeds[self.next](), np.float32)
            self.next += 1
            if self.ptr is None:
                self.nbytes = x.nbytes
                self.ptr = _call(cudart, "cudaMalloc", self.nbytes)
            _call(cudart, "cudaMemcpy", self.ptr, x.ctypes.data, x.nbytes,
                  cudart.cudaMemcpyKind.cudaMemcpyHostToDevice)
            return [int(self.ptr)]

        def read_calibration_cache(self):
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, data):
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_name(cache_file.name + ".tmp")
            tmp.write_bytes(bytes(data))
            tmp.replace(cache_file)

        def free(self):
            if self.ptr is not None:
                cudart.cudaFree(self.ptr)
                self.ptr = None

    return Calibrator()


def _declared_input(trt, onnx_file: Path) -> tuple[int, ...]:
    logger = trt.Logger(trt.Logger.ERROR)
    _, network, _ = _parse_onnx(trt, onnx_file, logger)
    return tuple(int(d) for d in network.get_input(0).shape)


def make_key(manifest: RunnableModel, onnx_file: Path, options: EngineOptions) -> EngineKey:
    """The engine key for this model on this device (parses the ONNX file for its input)."""
    trt = _tensorrt()
    gpu, compute = device_identity()
    declared = _declared_input(trt, onnx_file)
    _, _, hi = _shapes(manifest, declared, options.max_batch)
    return EngineKey(
        tensorrt=trt.__version__, gpu=gpu, compute=compute, onnx_sha256=sha256_of(onnx_file),
        precision=options.precision, input_shape=hi, batch=hi[0], dla_core=options.dla_core,
        calibration=(options.calibration_source or "") if options.precision == "int8" else "")


def build(manifest: RunnableModel, onnx_file: Path, key: EngineKey, options: EngineOptions,
          calib_cache: Path) -> bytes:
    """A serialized engine for `key`, built from `onnx_file` (minutes on a Nano)."""
    trt = _tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder, network, _parser = _parse_onnx(trt, onnx_file, logger)
    config = builder.create_builder_config()
    inp = network.get_input(0)
    lo, opt, hi = _shapes(manifest, tuple(int(d) for d in inp.shape), options.max_batch)
    if lo != hi:
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, lo, opt, hi)
        config.add_optimization_profile(profile)
        if key.precision == "int8":
            config.set_calibration_profile(profile)
    calibrator = None
    if key.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # int8 layers fall back to fp16, not fp32
    if key.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator = _calibrator(trt, manifest, options, opt[0], calib_cache)
        config.int8_calibrator = calibrator
    if key.dla_core is not None:
        cores = int(getattr(builder, "num_DLA_cores", 0))
        if key.dla_core >= cores:
            raise ApplianceError(f"detect.dla_core: {key.dla_core}, but this device has "
                                 f"{cores} DLA core(s)" + (" (0.." + str(cores - 1) + ")" if cores else ""))
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = key.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)  # layers the DLA cannot run go to the GPU

    cache.BUILDS.start(model_name(manifest), key.precision)
    last_logged = [-1]
    started = time.monotonic()

    def report(fraction: float) -> None:
        cache.BUILDS.update(fraction)
        if options.progress is not None:
            options.progress(fraction)
        tenth = int(fraction * 10)
        if tenth > last_logged[0]:
            last_logged[0] = tenth
            log.info("tensorrt: building engine for %s: %d %% (%.0f s)", show_path(onnx_file),
                     tenth * 10, time.monotonic() - started)

    monitor = _progress_monitor(trt, report)
    stop_heartbeat = threading.Event()
    if monitor is not None:
        config.progress_monitor = monitor
    else:
        def heartbeat():
            while not stop_heartbeat.wait(HEARTBEAT_S):
                log.info("tensorrt: building engine for %s: %.0f s so far", show_path(onnx_file),
                         time.monotonic() - started)
        threading.Thread(target=heartbeat, name="engine-build-heartbeat", daemon=True).start()
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        stop_heartbeat.set()
        cache.BUILDS.finish()
        if calibrator is not None:
            calibrator.free()
    if serialized is None:
        raise ApplianceError(f"{show_path(onnx_file)}: TensorRT could not build an engine "
                             f"({key.precision}{'' if key.dla_core is None else f', DLA {key.dla_core}'}); "
                             "its log above says why")
    report(1.0)
    return bytes(serialized)


def model_name(manifest: RunnableModel) -> str:
    """The name engines of this model are filed under: the manifest's `name`."""
    return str(getattr(manifest, "name", "") or Path(manifest.path).parent.name)


def ensure_engine(manifest: RunnableModel, options: EngineOptions) -> tuple[Path, str]:
    """The engine to load for this manifest: (path, how it was had: "cache" | "built" |
    "prebuilt"). Builds into the cache when no engine fits this device."""
    onnx_file: Path | None = manifest.file if manifest.format == "onnx" else getattr(manifest, "onnx_file", None)
    name = model_name(manifest)
    if manifest.format == "engine":
        prebuilt = manifest.file
        trt = _tensorrt()
        gpu, compute = device_identity()
        here = EngineKey(trt.__version__, gpu, compute, "", "", (), 0)
        why = cache.check_engine(prebuilt, here, cache.DEVICE_PARTS)
        if not why:
            return prebuilt, "prebuilt"
        if onnx_file is None:
            raise ApplianceError(f"{show_path(manifest.path)}: file: {why}; it is not loaded. Name the "
                                 "ONNX file it came from as onnx_file, so that it is rebuilt here")
        log.info("tensorrt: not loading %s: %s; building from %s", show_path(prebuilt), why,
                 show_path(onnx_file))
    assert onnx_file is not None
    key = make_key(manifest, onnx_file, options)
    found = cache.lookup(options.cache_dir, name, key)
    if found.path is not None:
        return found.path, "cache"
    log.info("tensorrt: building a %s engine for %s (%s); this takes minutes on a Jetson",
             key.precision, name, found.reason)
    path = cache.engine_path(options.cache_dir, name, key)
    t0 = time.monotonic()
    data = build(manifest, onnx_file, key, options, path.with_suffix(".calib"))
    build_s = time.monotonic() - t0
    path = cache.store(options.cache_dir, name, key, data, build_s)
    log.info("tensorrt: engine built in %.0f s: %s", build_s, show_path(path))
    cache.prune(options.cache_dir, name, key)
    return path, "built"


def manifest_at_size(manifest: Any, spec: Any, resized_dir: Path) -> Any:
    """The manifest as an onnx model at another input size: the same ONNX file when its
    height and width are dynamic, else the export converted for that size (detect/resize.py)."""
    onnx = manifest.file if manifest.format == "onnx" else getattr(manifest, "onnx_file", None)
    if onnx is None:
        raise ApplianceError(f"{show_path(manifest.path)}: input_sizes: a format engine model needs "
                             "onnx_file to run at other sizes")
    declared = _declared_input(_tensorrt(), onnx)
    hw = declared[2:] if spec.layout == "nchw" else declared[1:3]
    if all(d >= 0 for d in hw):  # a static export
        from appliance.detect.resize import resized_file

        onnx = resized_file(onnx, spec.width, spec.height, resized_dir)
    return replace(manifest, input=spec, file=onnx, format="onnx")
