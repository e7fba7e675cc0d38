"""The latest picture of each camera, annotated and JPEG-encoded only when someone asks.

The track stage hands over a reference to each camera's latest FrameResult, which costs
nothing per frame. Drawing and encoding happen in the caller's thread (a dashboard
viewer, an MQTT snapshot command) and are cached per frame, so many viewers of one
camera share one encoding and nobody watching means no encoding at all.
"""
from __future__ import annotations

import numbers
import threading
from typing import Sequence

import cv2
import numpy as np

from appliance.detect.detector import label_name
from appliance.result import FrameResult

_COLOURS = [(86, 180, 233), (230, 159, 0), (0, 158, 115), (240, 228, 66), (0, 114, 178),
            (213, 94, 0), (204, 121, 167)]  # colour-blind-safe palette (BGR order is fine here)


class LiveView:
    def __init__(self, labels: Sequence[str], quality: int = 80):
        self.labels = labels
        self.quality = quality
        self._latest: dict[str, FrameResult] = {}
        self._cache: dict[str, tuple[int, bytes]] = {}
        self._lock = threading.Lock()

    def update(self, result: FrameResult) -> None:
        self._latest[result.camera_id] = result

    def cameras(self) -> list[str]:
        return sorted(self._latest)

    def frame_seq(self, camera: str) -> int | None:
        latest = self._latest.get(camera)
        return latest.frame.seq if latest else None

    def frame_size(self, camera: str) -> tuple[int, int] | None:
        """(width, height) of the camera's latest frame, or None before its first."""
        latest = self._latest.get(camera)
        return None if latest is None else (latest.frame.image.shape[1], latest.frame.image.shape[0])

    def jpeg(self, camera: str) -> bytes | None:
        """The latest annotated frame of a camera as JPEG, or None before its first frame."""
        latest = self._latest.get(camera)
        if latest is None:
            return None
        with self._lock:
            cached = self._cache.get(camera)
            if cached and cached[0] == latest.frame.seq:
                return cached[1]
            ok, buf = cv2.imencode(".jpg", self._draw(latest), [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            data = buf.tobytes() if ok else b""
            self._cache[camera] = (latest.frame.seq, data)
            return data

    def _draw(self, latest: FrameResult) -> np.ndarray:
        img = latest.frame.image.copy()  # the frame itself is shared with the pipeline
        h, w = img.shape[:2]
        scale = max(0.4, min(w, h) / 900)
        for t in latest.tracks:
            colour = _COLOURS[t.id % len(_COLOURS)]
            x1, y1, x2, y2 = (int(v) for v in np.clip(t.xyxy, 0, [w - 1, h - 1, w - 1, h - 1]))
            cv2.rectangle(img, (x1, y1), (x2, y2), colour, 2)
            text = track_text(t.id, label_name(self.labels, int(t.class_id)), latest.attributes.get(t.id))
            tw, th = _text_size(text, scale)
            ty = max(y1, th + 4)
            cv2.rectangle(img, (x1, ty - th - 4), (x1 + tw + 4, ty), colour, -1)
            _put_text(img, text, (x1 + 2, ty - 3), scale, th)
        return img


_DOT = "\u00b7"  # the middle dot between the class and the type; Hershey fonts have none


def track_text(track_id: int, label: str, attributes: dict | None) -> str:
    """A box's caption: `<id> <class>`, and ` · <type> <score>` once the classifier has
    decided one (attributes["classification"], e.g. `7 car · pickup 0.82`)."""
    text = f"{track_id} {label}"
    c = (attributes or {}).get("classification")
    if isinstance(c, dict) and isinstance(c.get("label"), str) and c["label"]:
        text += f" {_DOT} {c['label']}"
        score = c.get("score")
        if isinstance(score, numbers.Real) and not isinstance(score, bool):
            text += f" {score:.2f}"
    return text


def _parts(text: str, scale: float) -> tuple[list[tuple[str, int]], int]:
    """The text between middle dots with their widths, and the width of a dot's slot."""
    dot_w = cv2.getTextSize(".", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]
    return [(p, cv2.getTextSize(p, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]) for p in text.split(_DOT)], dot_w


def _text_size(text: str, scale: float) -> tuple[int, int]:
    parts, dot_w = _parts(text, scale)
    th = cv2.getTextSize("0", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][1]
    return sum(pw for _, pw in parts) + dot_w * (len(parts) - 1), th


def _put_text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, th: int) -> None:
    """putText, with each middle dot drawn as a small disc at half the digits' height."""
    x, y = org
    parts, dot_w = _parts(text, scale)
    for i, (part, pw) in enumerate(parts):
        if i:
            cv2.circle(img, (x + dot_w // 2, y - th // 2), max(1, round(scale * 2)), (0, 0, 0), -1, cv2.LINE_AA)
            x += dot_w
        cv2.putText(img, part, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
        x += pw
