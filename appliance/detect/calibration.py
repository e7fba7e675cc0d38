"""Frames for INT8 calibration (`detect.calibration_source`), sampled from what the
cameras will see: a folder of images, a video file, or `camera:ID`, a camera of the config.

TensorRT measures each layer's activation range on these frames once per build and keeps
the result in a calibration cache beside the engine, so the source is read only when no
cache exists. Frames are kept shrunk to the network input size (a few hundred kB each).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from appliance.detect.manifest import show_path
from appliance.errors import ApplianceError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
KEY = "detect.calibration_source"
LIVE_EVERY = 5  # a live camera: keep every 5th frame, so the sample spans some seconds
LIVE_MAX_FAILURES = 25  # failed reads in a row before a live camera is given up


@dataclass(frozen=True)
class CalibrationSource:
    text: str  # as configured; part of the engine key
    kind: str  # folder | video | camera
    target: str  # the folder, the video file, or the camera's source URI
    camera_id: str = ""


def resolve(text: str, cameras: dict[str, str], assets_dir: Path | None = None) -> CalibrationSource:
    """What `detect.calibration_source` names; an ApplianceError naming the key when nothing."""
    if text.startswith("camera:"):
        cam = text[len("camera:"):]
        if cam not in cameras:
            raise ApplianceError(f"{KEY}: {text}: no camera {cam!r} in cameras[] "
                                 f"(cameras: {', '.join(cameras) or 'none'})")
        return CalibrationSource(text, "camera", cameras[cam], cam)
    p = Path(text).expanduser()
    if p.is_dir():
        return CalibrationSource(text, "folder", str(p))
    if p.is_file():
        return CalibrationSource(text, "video", str(p))
    raise ApplianceError(f"{KEY}: {text}: not a folder of images, a video file or camera:ID "
                         "(a camera id from cameras[])")


def _fit(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Shrink (never enlarge) to fit width x height, keeping the aspect: what the
    preprocessing will do anyway, at a fraction of the memory."""
    h, w = image.shape[:2]
    r = min(width / w, height / h)
    if r >= 1.0:
        return image
    return cv2.resize(image, (max(1, round(w * r)), max(1, round(h * r))), interpolation=cv2.INTER_AREA)


def _from_folder(src: CalibrationSource, count: int) -> list[np.ndarray]:
    files = sorted(p for p in Path(src.target).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ApplianceError(f"{KEY}: {src.text}: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
    picks = [files[i] for i in np.linspace(0, len(files) - 1, min(count, len(files))).round().astype(int)]
    frames, bad = [], []
    for f in dict.fromkeys(picks):
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        (frames if img is not None else bad).append(img if img is not None else f)
    if bad:
        log.warning("calibration: skipped %d unreadable image(s), e.g. %s", len(bad), show_path(bad[0]))
    if not frames:
        raise ApplianceError(f"{KEY}: {src.text}: none of its images could be read")
    return frames


def _from_video(src: CalibrationSource, count: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(src.target)
    try:
        if not cap.isOpened():
            raise ApplianceError(f"{KEY}: {src.text}: cannot open it as a video")
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        step = max(1, total // count) if total > 0 else 1
        frames: list[np.ndarray] = []
        index = 0
        while len(frames) < count:
            if index % step == 0:
                ok, img = cap.read()
                if not ok:
                    break
                frames.append(img)
            elif not cap.grab():  # skipped frames are decoded only as far as needed
                break
            index += 1
    finally:
        cap.release()
    if not frames:
        raise ApplianceError(f"{KEY}: {src.text}: no frame could be read from it")
    return frames


def _from_camera(src: CalibrationSource, count: int, assets_dir: Path | None) -> list[np.ndarray]:
    from appliance.capture.readers import CaptureSettings, SourceUnavailable, open_reader
    from appliance.capture.source import parse_uri

    spec = parse_uri(src.target, assets_dir)
    if not spec.live:
        return _from_video(CalibrationSource(src.text, "video", spec.target), count)
    try:
        reader = open_reader(src.camera_id, spec, CaptureSettings())
    except SourceUnavailable as e:
        raise ApplianceError(f"{KEY}: {src.text}: camera {src.camera_id} cannot be opened ({e})") from None
    frames: list[np.ndarray] = []
    failures = index = 0
    try:
        while len(frames) < count and failures < LIVE_MAX_FAILURES:
            ok, img = reader.read()
            if not ok or img is None:
                failures += 1
                continue
            failures = 0
            if index % LIVE_EVERY == 0:
                frames.append(img)
            index += 1
    finally:
        reader.release()
    if len(frames) < count:
        log.warning("calibration: camera %s stopped giving frames after %d of %d",
                    src.camera_id, len(frames), count)
    if not frames:
        raise ApplianceError(f"{KEY}: {src.text}: camera {src.camera_id} gave no frames")
    return frames


def sample(src: CalibrationSource, count: int, width: int, height: int,
           assets_dir: Path | None = None) -> list[np.ndarray]:
    """Up to `count` BGR frames spread over the source, shrunk to fit width x height."""
    if count < 1:
        raise ValueError("count must be at least 1")
    if src.kind == "folder":
        frames = _from_folder(src, count)
    elif src.kind == "video":
        frames = _from_video(src, count)
    else:
        frames = _from_camera(src, count, assets_dir)
    frames = [_fit(f, width, height) for f in frames if f.ndim == 3 and f.shape[2] == 3]
    log.info("calibration: %d frame(s) from %s", len(frames), src.text)
    return frames


def batches(frames: list[np.ndarray], batch: int,
            prepare: Callable[[list[np.ndarray]], np.ndarray]) -> list[Callable[[], np.ndarray]]:
    """Calibration batches of exactly `batch` frames (the remainder is dropped), each made
    into the network's input tensor only when TensorRT asks for it."""
    n = len(frames) // batch
    if n == 0:
        raise ApplianceError(f"{KEY}: {len(frames)} frame(s) are fewer than one batch of {batch}")
    return [lambda i=i: prepare(frames[i * batch:(i + 1) * batch]) for i in range(n)]
