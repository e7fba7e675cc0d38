"""`appliance analyze --mot DET_TXT --config FILE --fps F`: the tracker and camera `mot`'s
lines and zones over MOTChallenge detections, one JSON object out.

MOT frames have no picture: the processor only needs the frame size (for fractions), so
each frame is a zero-stride stand-in of that size. Times are frame / fps.
"""
from __future__ import annotations

import json
import os
from typing import Any, Iterator, TextIO

import numpy as np

from appliance import config as config_mod
from appliance.analytics.processor import CameraAnalytics
from appliance.capture.frame import Frame
from appliance.detect.types import Detections
from appliance.errors import ApplianceError
from appliance.result import FrameResult
from appliance.track.mot import iter_frames, read_detections
from appliance.track.sort import TrackerOutput

CAMERA = "mot"
LABELS = ("person",)  # MOTChallenge detections are people, class 0


def _tracker(track_cfg: Any, fps: float) -> Any:
    """The tracker as `appliance track --mot` builds it (the one place that knows how)."""
    from appliance.track import mot

    return mot.make_tracker(track_cfg, fps)


def track_frames(det_path: str | os.PathLike, track_cfg: Any,
                 fps: float) -> Iterator[tuple[int, float, TrackerOutput]]:
    """(frame, t seconds, tracker output) for every frame, then a last one that ends every
    track still live (frame 0)."""
    tracker = _tracker(track_cfg, fps)
    dets = read_detections(det_path)
    last_t = 0.0
    for frame, xyxy, score in iter_frames(dets):
        last_t = (frame - 1) / fps
        yield frame, last_t, tracker.update(xyxy, score, t=last_t)
    yield 0, last_t, TrackerOutput([], tracker.flush())


def analyze(det_path: str | os.PathLike, cfg: Any, fps: float, size: tuple[int, int] | None = None) -> dict:
    """Counts of camera `mot`'s lines and zones; see module doc."""
    cams = {c.id: c for c in cfg.cameras}
    if CAMERA not in cams:
        raise ApplianceError(f"the config has no camera {CAMERA!r} (cameras: {', '.join(cams)}): analyze uses "
                             f"the lines and zones of camera {CAMERA!r}")
    cam = cams[CAMERA]
    if size is None:
        if not (cam.width and cam.height):
            raise ApplianceError(f"frame size unknown: give --size WxH or cameras[{CAMERA}].width and height")
        size = (cam.width, cam.height)
    w, h = size
    image = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (h, w, 3))  # a frame's shape, no pixels
    proc = CameraAnalytics(cfg.device.id, CAMERA, LABELS, cam)
    ids: set[int] = set()
    last: Frame | None = None
    for frame, t, out in track_frames(det_path, cfg.track, fps):
        f = last if frame == 0 and last is not None else Frame(image, CAMERA, frame, t, t)
        r = FrameResult(f, Detections.empty(), tracks=list(out.tracks), ended=list(out.ended), final=frame == 0)
        proc.process(r)
        ids.update(tr.id for tr in out.tracks)
        last = f
    counts = proc.counts()
    return {
        "lines": {n: {"in": c["in"], "out": c["out"], "by_label": c["by_label"]} for n, c in counts["lines"].items()},
        "zones": {n: {"entered": z["entered"], "max_occupancy": z["max_occupancy"], "mean_dwell_s": z["mean_dwell_s"]}
                  for n, z in counts["zones"].items()},
        "tracks": len(ids),
    }


def parse_size(text: str) -> tuple[int, int]:
    """"640x480" -> (640, 480); ApplianceError otherwise."""
    parts = text.lower().split("x")
    if len(parts) == 2 and all(p.isdigit() and 0 < int(p) <= 16384 for p in parts):
        return int(parts[0]), int(parts[1])
    raise ApplianceError(f"--size: expected WIDTHxHEIGHT in pixels, e.g. 640x480, got {text!r}")


def main(det_path: str, config_path: str, fps: float, size: str | None, stream: TextIO) -> int:
    cfg = config_mod.load(config_path)
    result = analyze(det_path, cfg, fps, parse_size(size) if size else None)
    stream.write(json.dumps(result) + "\n")
    return 0

