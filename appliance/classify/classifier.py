"""The second-stage classifier: crops of tracked objects in, a type from the appliance's
vocabulary out.

    clf = load_classifier("efficientnet-lite0-vehicle", assets_dir)
    crop = clf.crop(frame, track.xyxy)          # None: too small, degenerate or off the image
    [p] = clf.classify([crop])                  # Prediction(label="pickup", score=0.71, model_label="pickup")

The model's classes fold into the vocabulary through the manifest's `label_map`: the
probabilities of every class that maps to one vocabulary label are summed, classes it does
not name count as "other", and the best vocabulary label wins. The backends are the
detectors' (LiteRT, ONNX Runtime; appliance/detect/backends/), and everything a model needs
is in its manifest (appliance/classify/manifest.py, docs/classify.md).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from appliance.classify.manifest import OTHER, ClassifierManifest, load_manifest
from appliance.detect import preprocess
from appliance.detect.backends import Backend, open_backend
from appliance.detect.detector import _metadata_labels, label_name
from appliance.detect.manifest import show_path
from appliance.errors import ApplianceError

log = logging.getLogger(__name__)

# Outputs this far outside [0, 1] are not probabilities: the manifest should say softmax: true.
_PROB_SLACK = 1e-3


@dataclass(frozen=True)
class Prediction:
    label: str  # appliance vocabulary (after label_map), e.g. "pickup" or "other"
    score: float  # summed probability of the model classes that map to `label`, at most 1
    model_label: str  # the model's top class name, e.g. "pickup"


class Classifier:
    """Runs one classifier on BGR crops. One classify() at a time (it holds a lock)."""

    def __init__(self, manifest: ClassifierManifest, backend: Backend, model_labels: Sequence[str],
                 vocabulary: Sequence[str], fold: np.ndarray):
        self.manifest = manifest
        self.backend = backend
        self.name = manifest.name
        self.version = manifest.version
        self.labels: tuple[str, ...] = tuple(vocabulary)  # the vocabulary, "other" included
        self.model_labels: tuple[str, ...] = tuple(model_labels)  # the model's classes by index
        self.margin = manifest.margin
        self.min_size = manifest.min_size
        self._fold = fold  # (classes, vocabulary) 0/1: which vocabulary label each class counts for
        self._uint8_spec = dataclasses.replace(manifest.input, dtype="uint8")
        spec = manifest.input
        shape = (1, 3, 1, 1) if spec.layout == "nchw" else (1, 1, 1, 3)
        self._mean = np.asarray(spec.mean, np.float32).reshape(shape)
        self._inv_std = (1.0 / np.asarray(spec.std, np.float32)).reshape(shape)
        self._lock = threading.Lock()  # the buffer and most runtimes are not reentrant
        self._buffer: np.ndarray | None = None

    # -- crops ------------------------------------------------------------------------

    def crop(self, image: np.ndarray, box_xyxy) -> np.ndarray | None:
        """The crop of `box_xyxy` (x1, y1, x2, y2 in image pixels) grown by `margin` of the
        box's width and height on each side and clipped to the image, as a copy (it may
        outlive the frame). None when the box is not finite, has no area, lies off the image,
        or the clipped crop's shorter side is under `min_size` pixels."""
        box = np.asarray(box_xyxy, dtype=np.float64).reshape(-1)
        if box.shape != (4,):
            raise ValueError(f"box: expected 4 numbers x1, y1, x2, y2, got {box.size}")
        if not np.all(np.isfinite(box)):
            return None
        x1, y1, x2, y2 = (float(v) for v in box)
        if x2 <= x1 or y2 <= y1:
            return None
        h, w = image.shape[:2]
        mx, my = (x2 - x1) * self.margin, (y2 - y1) * self.margin
        left, top = max(0, math.floor(x1 - mx)), max(0, math.floor(y1 - my))
        right, bottom = min(w, math.ceil(x2 + mx)), min(h, math.ceil(y2 + my))
        if min(right - left, bottom - top) < self.min_size:
            return None
        return image[top:bottom, left:right].copy()

    # -- inference --------------------------------------------------------------------

    def _input(self, n: int) -> np.ndarray:
        size = self.backend.max_batch if self.backend.fixed_batch else n
        if self._buffer is None or len(self._buffer) != size:
            self._buffer = preprocess.new_buffer(self._uint8_spec, size)  # type: ignore[arg-type]
        return self._buffer

    def _tensor(self, x: np.ndarray) -> np.ndarray:
        """The filled uint8 buffer as the model's input: as it is, or normalised floats."""
        if self.manifest.input.dtype == "uint8":
            return x
        return (x.astype(np.float32) - self._mean) * self._inv_std

    def probabilities(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """The model's class probabilities, (len(crops), classes) float32, softmax applied when
        the manifest asks for it. Crops are BGR uint8 HxWx3 of any size."""
        crops = list(crops)
        n_classes = len(self.model_labels)
        out = np.empty((len(crops), n_classes), np.float32)
        step = self.backend.max_batch or max(1, len(crops))
        with self._lock:
            for start in range(0, len(crops), step):
                chunk = crops[start:start + step]
                x = self._input(len(chunk))
                preprocess.fill(chunk, self._uint8_spec, x)  # type: ignore[arg-type]
                y = np.asarray(self.backend.run(self._tensor(x))[0], np.float32)
                out[start:start + len(chunk)] = y.reshape(len(y), -1)[:len(chunk)]
        if self.manifest.softmax:
            out -= out.max(axis=1, keepdims=True)
            np.exp(out, out=out)
            out /= out.sum(axis=1, keepdims=True)
        if not np.all(np.isfinite(out)):
            raise ApplianceError(f"classifier {self.name}: model {show_path(self.backend.model_file)} "
                                 "gave non-finite outputs")
        return out

    def classify(self, crops: Sequence[np.ndarray], known: bool = False) -> list[Prediction]:
        """One Prediction per crop (BGR uint8 HxWx3, any size; resizing happens here).
        Backends that take one image at a time are looped. A crop that is not an image is a
        ValueError; otherwise this raises only on a broken model.

        known: the detector already says what kind of object this is (a vehicle for the
        vehicle model), so the question is only which type: "other" does not compete, and
        the score is the type's share of the vocabulary's probability. Without it, the
        probability of every class outside the label map (a crop that looks like a fence
        or a television) adds up to "other", which then beats the types on most blurred or
        partly hidden vehicles (docs/classify.md)."""
        crops = list(crops)
        if not crops:
            return []
        probs = self.probabilities(crops)
        folded = probs @ self._fold  # (crops, vocabulary): summed per vocabulary label
        if known:
            types = folded[:, :-1]  # "other" is last
            best = types.argmax(axis=1)
            scores = types[np.arange(len(crops)), best] / np.maximum(types.sum(axis=1), 1e-9)
        else:
            best = folded.argmax(axis=1)
            scores = folded[np.arange(len(crops)), best]
        top = probs.argmax(axis=1)
        return [Prediction(self.labels[b], min(1.0, float(sc)), label_name(self.model_labels, int(t)))
                for b, sc, t in zip(best, scores, top)]

    def describe(self, p: Prediction) -> dict:
        """A prediction as JSON-ready data, with the model that made it (score: 4 decimals)."""
        return {"label": p.label, "score": round(p.score, 4), "model_label": p.model_label,
                "model": self.name, "version": self.version}


# -- loading ------------------------------------------------------------------------------

def _vocabulary(manifest: ClassifierManifest, model_labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The vocabulary (labels in label-map order, "other" last) and the fold matrix."""
    if manifest.label_map is None:  # no map: the model's classes are the vocabulary
        mapped = {name: name for name in model_labels if name}
    else:
        known = set(model_labels)
        unknown = [k for k in manifest.label_map if k not in known]
        if unknown:
            where = show_path(manifest.path)
            source = "" if manifest.label_map_source == "label_map" else f" ({manifest.label_map_source})"
            shown = ", ".join(repr(k) for k in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5
                                                               else "")
            raise ApplianceError(f"{where}: label_map{source}: {shown} not a class of model "
                                 f"{show_path(manifest.file)} (its labels: {manifest.labels_source})")
        mapped = dict(manifest.label_map)
    vocabulary = list(dict.fromkeys(v for v in mapped.values() if v != OTHER)) + [OTHER]
    index = {v: i for i, v in enumerate(vocabulary)}
    fold = np.zeros((len(model_labels), len(vocabulary)), np.float32)
    for c, name in enumerate(model_labels):
        fold[c, index[mapped.get(name, OTHER)]] = 1.0
    return vocabulary, fold


def _output_size(manifest: ClassifierManifest, backend: Backend, probe) -> int:
    """Classes per image of the model's single output, from its declared shape or a probe."""
    model = show_path(backend.model_file)
    if len(backend.output_shapes) != 1:
        raise ApplianceError(f"{show_path(manifest.path)}: model {model} has {len(backend.output_shapes)} outputs "
                             f"({', '.join(backend.output_names)}); a classifier has one, the class scores")
    shape = backend.output_shapes[0]
    per_image = shape[1:]
    if len(shape) >= 1 and all(d > 0 for d in per_image):
        return int(np.prod(per_image)) if per_image else 1
    y = probe()[0]
    return int(np.prod(np.shape(y)[1:])) if np.ndim(y) > 1 else 1


def load_classifier(model: str, assets_dir: Path, backend: str = "auto", threads: int = 1) -> Classifier:
    """A ready classifier for a model name (models/<name>/model.yaml) or a manifest path.

    Refused here, with an ApplianceError naming the file (the caller can then run without
    classification): a manifest that is wrong or whose files are missing, a model that does
    not load or run, labels that do not match the model's output, label-map keys that are
    not the model's classes, and probabilities that are not (softmax: false on logits)."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ApplianceError(f"threads: must be a positive integer, got {threads!r}")
    manifest = load_manifest(model, Path(assets_dir))
    be = open_backend(manifest, backend, threads)
    where, file = show_path(manifest.path), show_path(be.model_file)
    labels = list(manifest.labels) if manifest.labels is not None else _metadata_labels(be)
    if not labels:
        raise ApplianceError(f"{where}: labels: not set and model {file} has no 'names' metadata; "
                             "add a labels file or list")
    vocabulary, fold = _vocabulary(manifest, labels)
    clf = Classifier(manifest, be, labels, vocabulary, fold)
    probed: list[np.ndarray] = []

    def probe() -> list[np.ndarray]:
        if not probed:
            rng = np.random.default_rng(0)
            crop = rng.integers(0, 256, (manifest.input.height, manifest.input.width, 3), np.uint8)
            x = clf._input(1)
            preprocess.fill([crop], clf._uint8_spec, x)  # type: ignore[arg-type]
            try:
                probed.extend(np.asarray(y) for y in be.run(clf._tensor(x)))
            except Exception as e:  # a model that loads but cannot run (bad graph, wrong input)
                raise ApplianceError(f"{file}: test inference failed: {e}") from None
        return probed

    n = _output_size(manifest, be, probe)
    if n != len(labels):
        hint = {len(labels) + 1: " (a background class first? then its labels need one more line)",
                len(labels) - 1: " (the labels start with a background class the model does not have?)"}.get(n, "")
        raise ApplianceError(f"{where}: labels: {len(labels)} labels ({manifest.labels_source}) but model {file} "
                             f"gives {n} class scores{hint}")
    y = np.asarray(probe()[0], np.float32)
    if not np.all(np.isfinite(y)):
        raise ApplianceError(f"{file}: test inference gave non-finite class scores")
    if not manifest.softmax and (y.min() < -_PROB_SLACK or y.max() > 1 + _PROB_SLACK):
        raise ApplianceError(f"{where}: output.softmax: false, but model {file} gives scores from "
                             f"{y.min():.3g} to {y.max():.3g}, not probabilities; set output.softmax: true")
    log.info("classifier %s %s: %s on %s, %d classes into %s", manifest.name, manifest.version, be.name,
             be.device, len(labels), ", ".join(vocabulary))
    return clf
