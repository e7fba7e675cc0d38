"""The detector the pipeline uses: manifest + backend + decoder, checked once at load."""
from __future__ import annotations

import ast
import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from appliance.detect import preprocess
from appliance.detect.backends import Backend, open_backend
from appliance.detect.decoders import Decode, ssd_decoder, yolo_decoder
from appliance.detect.manifest import InputSpec, ModelManifest, input_spec_at, load_manifest, show_path
from appliance.detect.types import Detections
from appliance.errors import ApplianceError

if TYPE_CHECKING:
    from appliance.detect.engine_cache import EngineOptions

log = logging.getLogger(__name__)


def label_name(labels: Sequence[str], class_id: int) -> str:
    """The label of a class id; ids without one (gaps, out of range) read as class<id>."""
    if 0 <= class_id < len(labels) and labels[class_id]:
        return labels[class_id]
    return f"class{class_id}"


def describe(det: Detections, labels: Sequence[str]) -> list[dict]:
    """Detections as JSON-ready dicts: label, score (4 decimals), box x1,y1,x2,y2 (1 decimal)."""
    return [
        {"label": label_name(labels, int(c)), "score": round(float(s), 4),
         "box": [round(float(v), 1) for v in box]}
        for box, s, c in zip(det.xyxy, det.score, det.class_id)
    ]


# Makes the backend and decoder of another input size (make_variant in load_detector).
MakeVariant = Callable[[InputSpec], "tuple[Backend, Decode]"]


class Detector:
    """Runs one model on batches of BGR frames. One detect() at a time (it holds a lock).

    A model whose manifest declares input_sizes runs at any of them (`sizes`, largest
    first): detect(images, size=...) picks one; each size's backend (for ONNX Runtime a
    session on the model converted for that size, appliance/detect/resize.py) is made on
    first use by prepare(size) and kept."""

    def __init__(self, manifest: ModelManifest, backend: Backend, decode: Decode,
                 labels: list[str], threshold: float, allowed: np.ndarray | None,
                 make_variant: MakeVariant | None = None):
        self.manifest = manifest
        self.backend = backend
        self.labels = labels
        self.name = manifest.name
        self.version = manifest.version
        self.threshold = threshold
        self._decode = decode
        self._allowed = allowed  # class ids, or None for all
        self._lock = threading.Lock()  # the buffers and most runtimes are not reentrant
        native = manifest.input.width
        self.sizes: tuple[int, ...] = (manifest.input_sizes or (native,)) if make_variant else (native,)
        self._make_variant = make_variant
        # size -> (input spec, backend, decoder); the manifest's own size is the one loaded
        self._variants: dict[int, tuple[InputSpec, Backend, Decode]] = {native: (manifest.input, backend, decode)}
        self._buffers: dict[int, np.ndarray] = {}

    def prepare(self, size: int | None = None) -> None:
        """Make the backend for an input size now (not in a timed detect()); a no-op once made."""
        size = self.manifest.input.width if size is None else size
        if size in self._variants:
            return
        if size not in self.sizes or self._make_variant is None:
            raise ApplianceError(f"detector {self.name}: input size {size} not one of {list(self.sizes)}")
        spec = input_spec_at(self.manifest.input, size)
        with self._lock:
            if size not in self._variants:
                backend, decode = self._make_variant(spec)
                self._variants[size] = (spec, backend, decode)
                log.info("detector %s: input size %dx%d ready", self.name, spec.width, spec.height)

    def _input(self, size: int, spec: InputSpec, backend: Backend, n: int) -> np.ndarray:
        batch = backend.max_batch if backend.fixed_batch else n
        buf = self._buffers.get(size)
        if buf is None or len(buf) != batch:
            buf = self._buffers[size] = preprocess.new_buffer(spec, batch)  # type: ignore[arg-type]
        return buf

    def detect(self, images: Sequence[np.ndarray], size: int | None = None) -> list[Detections]:
        """Detections per image (BGR uint8 HxWx3, any sizes), boxes in that image's pixels;
        `size`: the input width to run at (one of `sizes`; None: the manifest's own)."""
        size = self.manifest.input.width if size is None else size
        self.prepare(size)
        spec, backend, decode = self._variants[size]
        images = list(images)
        results: list[Detections] = []
        step = backend.max_batch or max(1, len(images))
        with self._lock:
            for start in range(0, len(images), step):
                chunk = images[start:start + step]
                x = self._input(size, spec, backend, len(chunk))
                transforms = preprocess.fill(chunk, spec, x)
                decoded = decode(backend.run(x), self.threshold)
                for (xyxy, score, cls), t in zip(decoded, transforms):
                    results.append(self._finish(xyxy, score, cls, t))
        return results

    def _finish(self, xyxy: np.ndarray, score: np.ndarray, cls: np.ndarray,
                t: preprocess.Transform) -> Detections:
        if self._allowed is not None:
            keep = np.isin(cls, self._allowed)
            xyxy, score, cls = xyxy[keep], score[keep], cls[keep]
        box = preprocess.to_source(xyxy, t)
        # Boxes wholly in the letterbox bars or off-image collapse to nothing when clipped.
        keep = (box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1])
        return Detections(box[keep], score[keep].astype(np.float32), cls[keep].astype(np.int32))


def _metadata_labels(backend: Backend) -> list[str] | None:
    """Ultralytics ONNX exports carry names = "{0: 'person', ...}" in their metadata."""
    raw = backend.metadata.get("names")
    if not raw:
        return None
    try:
        names = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return None
    if isinstance(names, dict) and names and all(isinstance(k, int) and k >= 0 for k in names):
        labels = [""] * (max(names) + 1)
        for k, v in names.items():
            labels[k] = str(v)
        return labels
    if isinstance(names, list) and names:
        return [str(v) for v in names]
    return None


def _allowed_ids(classes: Sequence[str] | None, labels: list[str], model: str) -> np.ndarray | None:
    if classes is None:
        return None
    by_name: dict[str, list[int]] = {}
    for i, name in enumerate(labels):
        if name:
            by_name.setdefault(name.lower(), []).append(i)
    unknown = [c for c in classes if c.strip().lower() not in by_name]
    if unknown:
        raise ApplianceError(
            f"classes: {', '.join(repr(c) for c in unknown)} not a label of model {model}; "
            f"valid: {', '.join(n for n in labels if n)}"
        )
    return np.array(sorted({i for c in classes for i in by_name[c.strip().lower()]}), np.int32)


def _probe_input(manifest: ModelManifest, backend: Backend) -> np.ndarray:
    # Noise, not zeros: a blank frame can make every output zero, which tells nothing apart.
    n = backend.max_batch if backend.fixed_batch else 1
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (manifest.input.height, manifest.input.width, 3), np.uint8)
              for _ in range(n or 1)]
    return preprocess.prepare(frames, manifest.input)[0]


def make_decoder(manifest: ModelManifest, backend: Backend, labels: list[str]) -> Decode:
    """Check once that the model's outputs fit its decoder; inference on a probe if needed."""
    model = show_path(backend.model_file)
    shapes = backend.output_shapes
    probed: list[np.ndarray] | None = None

    def probe() -> list[np.ndarray]:
        nonlocal probed
        if probed is None:
            try:
                probed = backend.run(_probe_input(manifest, backend))
            except ApplianceError:
                raise
            except Exception as e:  # a model that loads but cannot run (bad graph, wrong input)
                raise ApplianceError(f"{model}: test inference failed: {e}") from None
        return probed

    if any(-1 in s for s in shapes):  # dynamic output shapes: ask the model itself
        shapes = [tuple(np.shape(o)) for o in probe()]
    spec = manifest.input
    if manifest.decoder == "ssd":
        return ssd_decoder(shapes, backend.output_names, spec.width, spec.height, model, probe)
    return yolo_decoder(shapes, len(labels), spec.width, spec.height, model,
                        layout=manifest.output_layout, boxes=manifest.output_boxes,
                        iou=manifest.nms_iou)


def load_detector(model: str, assets_dir: Path, backend: str = "auto", threshold: float = 0.5,
                  classes: Sequence[str] | None = None, threads: int | str = "auto",
                  cache_dir: Path | None = None, engine: "EngineOptions | None" = None) -> Detector:
    """A ready detector for a model name (models/<name>/model.yaml) or manifest path.

    engine: TensorRT's options (detect.precision, ...; engine_cache.options_from_config);
    None: the defaults, engines kept in <cache_dir or the data dir>/engines.

    threads: inference threads, or "auto": measured on this machine, the result kept in
    cache_dir/detect-threads.json when cache_dir is given (appliance/detect/threads.py).
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
            or not 0.0 <= threshold <= 1.0:
        raise ApplianceError(f"threshold: must be a number in [0, 1], got {threshold!r}")
    if threads != "auto" and (isinstance(threads, bool) or not isinstance(threads, int)
                              or threads < 1):
        raise ApplianceError(f"threads: must be a positive integer or 'auto', got {threads!r}")
    if isinstance(classes, str):
        classes = [classes]
    manifest = load_manifest(model, Path(assets_dir))
    if threads == "auto":
        from appliance.detect.threads import auto_threads

        threads = auto_threads(manifest, backend, cache_dir)
    if engine is None:
        from appliance.detect.engine_cache import default_options

        engine = default_options(cache_dir)
    be = open_backend(manifest, backend, threads, engine=engine)
    labels = list(manifest.labels) if manifest.labels is not None else _metadata_labels(be)
    if not labels:
        raise ApplianceError(
            f"{show_path(manifest.path)}: labels: not set and model {show_path(manifest.file)} "
            "has no 'names' metadata; add a labels file or list"
        )
    allowed = _allowed_ids(classes, labels, manifest.name)
    decode = make_decoder(manifest, be, labels)
    make_variant = _variant_maker(manifest, be, int(threads), labels, cache_dir or Path(assets_dir), engine)
    log.info("detector %s %s: %s on %s, threshold %.2f%s", manifest.name, manifest.version,
             be.name, be.device, threshold,
             f", classes {', '.join(classes)}" if classes else "")
    return Detector(manifest, be, decode, labels, float(threshold), allowed, make_variant)


def _variant_maker(manifest: ModelManifest, be: Backend, threads: int, labels: list[str], cache_dir: Path,
                   engine: "EngineOptions | None") -> MakeVariant | None:
    """How to run the model at its other input_sizes, or None if it declares none.

    A backend with its own way (`at_size(spec)`) is asked. An ONNX model runs each size on
    the backend that runs its own size (a TensorRT engine is built per size from the file):
    with dynamic height and width, the same file; a static export, the file converted for
    that size (appliance/detect/resize.py), here at load so a graph the converter does not
    know fails the start, not a later step down."""
    if len(manifest.input_sizes) < 2:
        return None
    at_size = getattr(be, "at_size", None)
    if at_size is not None:
        return lambda spec: _with_decoder(replace(manifest, input=spec), at_size(spec), labels)
    if manifest.format != "onnx":
        log.warning("%s: input_sizes: backend %s cannot change the input size of a %s model; "
                    "the adaptive control steps the stride alone", show_path(manifest.path), be.name,
                    manifest.format)
        return None
    files = {s: manifest.file for s in manifest.input_sizes}
    if -1 not in be.input_shape[2:]:  # a static export
        from appliance.detect.resize import resized_file

        for size in manifest.input_sizes:
            if size != manifest.input.width:
                spec = input_spec_at(manifest.input, size)
                files[size] = resized_file(manifest.file, spec.width, spec.height, cache_dir / "resized")
    engine = engine if be.name == "tensorrt" else None

    def make(spec: InputSpec) -> tuple[Backend, Decode]:
        m = replace(manifest, input=spec, file=files[spec.width])
        return _with_decoder(m, open_backend(m, be.name, threads, engine=engine), labels)

    return make


def _with_decoder(m: ModelManifest, be: Backend, labels: list[str]) -> tuple[Backend, Decode]:
    return be, make_decoder(m, be, labels)
