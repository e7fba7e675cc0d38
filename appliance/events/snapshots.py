"""Snapshots: the best picture of each track worth a look, kept as a JPEG when it ends.

Two halves, so that no file is written on the track thread:

- `Snapshots`, a track processor (one per camera, on the track thread, after the
  classifier and before the lifecycle events). While a track lives it keeps a copy of its
  best crop so far: the largest, sharpest, least cut by the frame edge (`crop_score`).
  When the track ends and the policy (`snapshots.policy`, `decide`) wants it, the crop
  goes to the writer and the file name goes into `result.attributes[track_id]
  ["snapshot"]`, which the lifecycle puts into the track's `end` event.
- `SnapshotWriter`, one stage (thread) for every camera, with a bounded queue: it
  encodes the JPEG, writes `<data dir>/snapshots/<camera>-<track id>.jpg` atomically
  (a temporary file, fsync, rename) and keeps the folder under `snapshots.max_mb`,
  deleting the oldest files first. When its queue is full the snapshot is not taken
  (counted), and the event names none: tracking never waits for the disk.

The uplink sends a snapshot after its `end` event (docs/mqtt.md), the dashboard serves
it at /api/snapshots/<event id>.jpg. Either may find the file gone (the quota removed
it): that is expected, not an error.
"""
from __future__ import annotations

import logging
import math
import os
import queue
import re
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from appliance import metrics
from appliance.detect.detector import label_name
from appliance.result import FrameResult
from appliance.stage import QueueStage

log = logging.getLogger(__name__)

FOLDER = "snapshots"  # under the data directory
QUEUE_SIZE = 32  # crops waiting for the writer; more are not taken (counted)
MARGIN = 0.1  # context kept around the box, as a share of its width and height, each side
MAX_SIDE = 512  # a kept crop's longest side, in pixels; larger ones are scaled down
SHARP_SIDE = 64  # sharpness is measured on a grayscale version this long on its longest side
SHARP_HALF = 100.0  # variance of the Laplacian at which sharpness counts half
MIN_AREA = 64.0  # visible box area (px²) below which a crop is not worth keeping
_NAME = re.compile(r"[A-Za-z0-9_.-]+\.jpg")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")

REASONS = ("low_detection", "low_classification", "undecided", "all")


def snapshots_dir(data_dir: Path) -> Path:
    return Path(data_dir) / FOLDER


def file_name(camera_id: str, track_id: int) -> str:
    """`<camera>-<track id>.jpg`; characters a file name should not have become `_`."""
    return f"{_UNSAFE.sub('_', camera_id)}-{int(track_id)}.jpg"


def is_snapshot_name(name: Any) -> bool:
    """A plain file name as file_name() makes them: no folder, nothing hidden."""
    return isinstance(name, str) and not name.startswith(".") and _NAME.fullmatch(name) is not None


# -- which crop is best ----------------------------------------------------------------


def cut_fraction(xyxy: Sequence[float], w: int, h: int) -> float:
    """Share of the box's area outside the frame (0: whole, 1: all outside)."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    area = (x2 - x1) * (y2 - y1)
    if not area > 0:
        return 1.0
    vis = max(0.0, min(x2, w) - max(x1, 0.0)) * max(0.0, min(y2, h) - max(y1, 0.0))
    return min(1.0, max(0.0, 1.0 - vis / area))


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of a small grayscale version (SHARP_SIDE on its longest
    side): high for crisp edges, low for motion blur or defocus, and comparable between
    crops of different sizes."""
    h, w = crop.shape[:2]
    if h < 3 or w < 3:
        return 0.0
    step = max(h, w) // (2 * SHARP_SIDE)
    if step > 1:  # a large crop: every step-th pixel first, so the cost stays small
        crop = crop[::step, ::step]
        h, w = crop.shape[:2]
    s = SHARP_SIDE / max(h, w)
    size = (max(3, round(w * s)), max(3, round(h * s)))
    small = cv2.resize(crop, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
    return float(cv2.Laplacian(gray, cv2.CV_32F).var())


def crop_score(area: float, sharp: float, cut: float) -> float:
    """How good a crop is as the picture of its track; higher is better.

    area: visible pixels of the box; sharp: sharpness(); cut: cut_fraction(). Each term
    alone decides when the others are equal: a bigger crop wins (linear size,
    sqrt(area)), a sharper one wins (sharp / (sharp + SHARP_HALF), saturating, so that
    beyond "sharp enough" size matters more), and a crop less cut by the frame edge wins
    ((1 - cut)², so half an object scores a quarter: a whole one a sixteenth of its area
    still ties it).
    """
    if not (area > 0 and math.isfinite(area)):
        return 0.0
    sharp_term = sharp / (sharp + SHARP_HALF) if sharp > 0 else 0.0
    return math.sqrt(area) * sharp_term * (1.0 - min(max(cut, 0.0), 1.0)) ** 2


# -- which tracks are kept ---------------------------------------------------------------


def decide(policy: str, best_detection: float, label: str, classification: dict | None,
           classified: frozenset[str] | set[str], detection_below: float,
           classification_below: float) -> str | None:
    """Why a track that ended keeps its snapshot (a REASONS value), or None.

    low_detection: its best detection score stayed under detection_below. For a label the
    classifier handles (`classified`): low_classification when its decided type scored
    under classification_below, undecided when it ended without one. `all` keeps every
    track, with the more specific reason when there is one; `none` keeps nothing.
    """
    if policy == "none":
        return None
    reason = None
    if best_detection < detection_below:
        reason = "low_detection"
    elif label in classified:
        score = classification.get("score") if isinstance(classification, dict) else None
        if not isinstance(score, (int, float)):
            reason = "undecided"
        elif score < classification_below:
            reason = "low_classification"
    if reason is None and policy == "all":
        reason = "all"
    return reason


# -- the writer --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Write:
    name: str
    crop: np.ndarray
    reason: str


class SnapshotWriter(QueueStage):
    """Writes snapshots and keeps their folder under max_bytes, oldest first (one thread
    for every camera). The folder's files are indexed at start, so the quota counts what
    an earlier run left too."""

    def __init__(self, folder: Path, max_bytes: int, quality: int = 85, maxsize: int = QUEUE_SIZE):
        super().__init__("snapshots", maxsize=maxsize)
        self.folder, self.max_bytes, self.quality = Path(folder), int(max_bytes), int(quality)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._files: OrderedDict[str, int] = OrderedDict()  # name -> bytes, oldest first
        self.bytes = 0
        self.saved: Counter = Counter()  # by reason
        self.failed: Counter = Counter()  # "queue" (full), "write" (encode or disk)
        self.removed = 0
        self._warned_at = 0.0
        self._scan()
        self._enforce_quota()

    def _scan(self) -> None:
        found = []
        for entry in os.scandir(self.folder):
            if entry.name.endswith(".tmp"):  # a write that a crash interrupted
                Path(entry.path).unlink(missing_ok=True)
            elif is_snapshot_name(entry.name) and entry.is_file():
                st = entry.stat()
                found.append((st.st_mtime, entry.name, st.st_size))
        for _, name, size in sorted(found):
            self._files[name] = size
            self.bytes += size
        metrics.SNAPSHOTS_BYTES.set(self.bytes)

    @property
    def files(self) -> int:
        return len(self._files)

    def offer(self, name: str, crop: np.ndarray, reason: str) -> bool:
        """Queue a snapshot; never blocks. False (counted) when the queue is full."""
        try:
            self.inbox.put_nowait(_Write(name, crop, reason))
            return True
        except queue.Full:
            self.failed["queue"] += 1
            metrics.SNAPSHOTS_FAILED.labels("queue").inc()
            return False

    def describe(self, item: Any) -> str:
        return f"snapshot {getattr(item, 'name', '?')}"

    def handle(self, item: _Write) -> None:
        try:
            ok, buf = cv2.imencode(".jpg", item.crop, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if not ok:
                raise OSError(f"cannot encode a {item.crop.shape} crop as JPEG")
            self._write(item.name, buf.tobytes())
        except (OSError, cv2.error) as e:
            self.failed["write"] += 1
            metrics.SNAPSHOTS_FAILED.labels("write").inc()
            now = time.monotonic()
            if now - self._warned_at > 60:
                log.warning("snapshots: cannot write %s: %s", self.folder / item.name, e)
                self._warned_at = now
            return
        self.saved[item.reason] += 1
        metrics.SNAPSHOTS_SAVED.labels(item.reason).inc()
        self._enforce_quota()

    def _write(self, name: str, data: bytes) -> None:
        path = self.folder / name
        tmp = path.with_name(f".{name}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # readers see the old file or the whole new one, never a part
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        self.bytes -= self._files.pop(name, 0)  # the same name again replaces the file
        self._files[name] = len(data)
        self.bytes += len(data)
        metrics.SNAPSHOTS_BYTES.set(self.bytes)

    def _enforce_quota(self) -> None:
        while self.bytes > self.max_bytes and self._files:
            name, size = self._files.popitem(last=False)
            try:
                (self.folder / name).unlink(missing_ok=True)
            except OSError as e:
                log.warning("snapshots: cannot remove %s: %s", self.folder / name, e)
                self._files[name] = size
                self._files.move_to_end(name, last=False)
                break
            self.bytes -= size
            self.removed += 1
            metrics.SNAPSHOTS_REMOVED.inc()
        metrics.SNAPSHOTS_BYTES.set(self.bytes)

    def status(self) -> dict[str, Any]:
        return {"state": "running" if self.alive else "stopped", "folder": str(self.folder),
                "files": self.files, "bytes": self.bytes, "max_bytes": self.max_bytes,
                "saved": dict(self.saved), "removed": self.removed, "failed": dict(self.failed),
                "queue_depth": self.depth}


# -- the track processor -----------------------------------------------------------------


@dataclass
class _Live:
    label: str
    best_detection: float = 0.0
    classification: dict | None = None
    crop: np.ndarray | None = None  # a copy, with MARGIN around the box
    score: float = 0.0  # crop_score of `crop`


class Snapshots:
    """Keeps each live track's best crop and hands the ones the policy wants to the
    writer when their track ends (a track processor, one per camera)."""

    def __init__(self, camera_id: str, labels: Sequence[str], writer: SnapshotWriter, cfg: Any,
                 classified: frozenset[str] | set[str] = frozenset()):
        """cfg: the `snapshots` section (policy, detection_below, classification_below);
        classified: labels a running classifier decides a type for."""
        self.camera_id, self.labels, self.writer, self.cfg = camera_id, labels, writer, cfg
        self.classified = frozenset(classified)
        self._live: dict[int, _Live] = {}

    @property
    def live(self) -> int:
        return len(self._live)

    def process(self, r: FrameResult) -> None:
        image = r.frame.image
        for t in r.tracks:
            s = self._live.get(t.id)
            label = label_name(self.labels, int(t.class_id))
            if s is None:
                s = self._live[t.id] = _Live(label)
            s.label = label
            s.best_detection = max(s.best_detection, float(t.score))  # matched this frame
            self._classification(s, r.attributes.get(t.id))
            if self._wanted(s):
                self._consider(s, t.xyxy, image)
            else:
                s.crop, s.score = None, 0.0  # it can no longer qualify: free the copy
        for t in r.ended:
            s = self._live.pop(t.id, None)
            if s is None:
                continue
            self._classification(s, r.attributes.get(t.id))
            s.label = label_name(self.labels, int(t.class_id))
            reason = self._decide(s)
            if reason is None or s.crop is None:
                continue
            name = file_name(self.camera_id, t.id)
            if self.writer.offer(name, s.crop, reason):
                r.attributes.setdefault(t.id, {})["snapshot"] = name

    @staticmethod
    def _classification(s: _Live, attrs: dict | None) -> None:
        c = (attrs or {}).get("classification")
        if isinstance(c, dict):
            s.classification = c

    def _decide(self, s: _Live) -> str | None:
        c = self.cfg
        return decide(c.policy, s.best_detection, s.label, s.classification, self.classified,
                      c.detection_below, c.classification_below)

    def _wanted(self, s: _Live) -> bool:
        """Whether the track may still qualify at its end (else no crop is kept)."""
        return self._decide(s) is not None  # undecided so far: it may stay so

    def _consider(self, s: _Live, xyxy: np.ndarray, image: np.ndarray) -> None:
        h, w = image.shape[:2]
        x1, y1, x2, y2 = (float(v) for v in xyxy)
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 <= x1 or y2 <= y1:
            return
        cut = cut_fraction((x1, y1, x2, y2), w, h)
        vx1, vy1, vx2, vy2 = (int(max(0, math.floor(x1))), int(max(0, math.floor(y1))),
                              int(min(w, math.ceil(x2))), int(min(h, math.ceil(y2))))
        area = float((vx2 - vx1) * (vy2 - vy1)) if vx2 > vx1 and vy2 > vy1 else 0.0
        if area < MIN_AREA or crop_score(area, math.inf, cut) <= s.score:
            return  # even perfectly sharp it would not beat the crop kept: skip the work
        score = crop_score(area, sharpness(image[vy1:vy2, vx1:vx2]), cut)
        if score <= s.score:
            return
        mx, my = (x2 - x1) * MARGIN, (y2 - y1) * MARGIN
        cx1, cy1 = int(max(0, math.floor(x1 - mx))), int(max(0, math.floor(y1 - my)))
        cx2, cy2 = int(min(w, math.ceil(x2 + mx))), int(min(h, math.ceil(y2 + my)))
        crop = image[cy1:cy2, cx1:cx2]
        longest = max(crop.shape[:2])
        if longest > MAX_SIDE:
            f = MAX_SIDE / longest
            crop = cv2.resize(crop, (max(1, round(crop.shape[1] * f)), max(1, round(crop.shape[0] * f))),
                              interpolation=cv2.INTER_AREA)
        else:
            crop = crop.copy()  # the frame goes on to the live view; keep only this part
        s.crop, s.score = crop, score


def classified_labels(ctx: Any) -> frozenset[str]:
    """Labels a running classifier decides a type for: `classify.classes` when the
    classifier is enabled and was loaded (its build, listed before this one in
    TRACK_PROCESSORS, put its stage in ctx.stages["classify"]); else none, so that no
    track counts as undecided when nothing classifies."""
    c = getattr(ctx.cfg, "classify", None)
    if c is None or not getattr(c, "enabled", False):
        return frozenset()
    if getattr(ctx, "stages", {}).get("classify") is None:
        return frozenset()
    return frozenset(getattr(c, "classes", ()))


def build(ctx, camera) -> Snapshots | None:
    """The pipeline's factory (TRACK_PROCESSORS: after classify, before lifecycle): None
    when `snapshots.policy` is `none`, or when the folder cannot be used (logged; the
    appliance runs without snapshots). One writer stage for every camera."""
    cfg = getattr(ctx.cfg, "snapshots", None)
    if cfg is None or cfg.policy == "none":
        return None
    writer = ctx.shared("snapshots", lambda: _make_writer(ctx, cfg))
    return Snapshots(camera.id, ctx.labels, writer, cfg, classified_labels(ctx)) if writer is not None else None


def _make_writer(ctx, cfg) -> SnapshotWriter | None:
    folder = snapshots_dir(ctx.data_dir)
    try:
        return SnapshotWriter(folder, int(cfg.max_mb * 2**20), cfg.quality)
    except OSError as e:
        log.error("snapshots: running without snapshots: cannot use %s: %s", folder, e)
        notes = getattr(ctx, "notes", None)
        if isinstance(notes, dict):
            notes["snapshots"] = {"state": "unavailable", "reason": f"{folder}: {e}"}
        return None
