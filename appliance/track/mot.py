"""MOTChallenge text I/O: run the tracker on a det.txt file and write the results.

Detection lines are ``frame,id,x,y,w,h,score,...`` (top-left corner, size, in
pixels); result lines are ``frame,id,x,y,w,h,1,-1,-1,-1``.
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator
from typing import TextIO

import numpy as np

from appliance.config.track import TrackConfig
from appliance.errors import ApplianceError
from appliance.track.sort import Sort, Track

log = logging.getLogger(__name__)

__all__ = ["MOT_HIGH_THRESHOLD", "iter_frames", "main", "make_tracker", "read_detections", "track_mot",
           "track_mot_frames", "write_mot"]

_MIN_FIELDS = 7  # frame, id, x, y, w, h, score


def read_detections(path: str | os.PathLike[str]) -> dict[int, np.ndarray]:
    """Detections per frame: ``{frame: (N, 5) float64 [x1, y1, x2, y2, score]}``.

    Only frames that have detections are keys; :func:`iter_frames` fills the gaps.
    Raises ApplianceError naming the file (and line) on unreadable or bad input.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ApplianceError(f"{path}: cannot read detections: {reason}") from e

    rows: dict[int, list[tuple[float, ...]]] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        fields = line.split(",")
        try:
            frame_f, _, x, y, w, h, score = map(float, fields[:_MIN_FIELDS])
        except ValueError:  # too few fields, or one is not a number
            bad = line if len(fields) < _MIN_FIELDS else next(
                v for v in fields[:_MIN_FIELDS] if not _is_number(v))
            raise ApplianceError(
                f"{path} line {lineno}: expected at least {_MIN_FIELDS} comma-separated "
                f"numbers, got {bad.strip()!r}"
            ) from None
        if not (frame_f >= 1 and frame_f.is_integer()):
            raise ApplianceError(
                f"{path} line {lineno}: frame must be an integer >= 1, got {fields[0]!r}"
            )
        rows.setdefault(int(frame_f), []).append((x, y, x + w, y + h, score))
    log.debug("%s: %d detections in %d frames", path, sum(map(len, rows.values())), len(rows))
    return {frame: np.array(r, dtype=np.float64) for frame, r in sorted(rows.items())}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def iter_frames(dets: dict[int, np.ndarray]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(frame, xyxy (N, 4), score (N,))`` for every frame from 1 to the last one.

    Frames without detections yield empty arrays: the tracker must still step
    through them, or its tracks would not age.
    """
    empty = np.zeros((0, 5))
    for frame in range(1, max(dets, default=0) + 1):
        d = dets.get(frame, empty)
        yield frame, d[:, :4], d[:, 4]


# The MOT15 detection files hold a Faster R-CNN's scores: already cut at 0.5 and
# saturated near 1 (median 0.99 on TUD). On that scale "confident" is 0.9, so 0.9 plays
# the part of detect.threshold (the tracker's high threshold), and everything in the
# file is seen as track.low_threshold's band would be live. The pipeline's own
# detector is not saturated like that: there detect.threshold (0.5) is the high one.
MOT_HIGH_THRESHOLD = 0.9


def make_tracker(cfg: TrackConfig, fps: float, high_threshold: float = MOT_HIGH_THRESHOLD) -> Sort:
    """A tracker with ``cfg``'s settings for detections at ``fps``, reporting from the
    first frame as the SORT paper's MOTChallenge results did (``report_warmup``)."""
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ApplianceError(f"fps: must be a number > 0, got {fps!r}")
    try:
        return Sort(cfg.max_age_s, cfg.min_hits, cfg.iou_threshold,
                    high_threshold=high_threshold, low_threshold=min(cfg.low_threshold, high_threshold),
                    report_warmup=True, frame_s=1.0 / fps)
    except ValueError as e:
        raise ApplianceError(f"tracker settings: {e}") from None


def track_mot_frames(path: str | os.PathLike[str], fps: float, cfg: TrackConfig | None = None,
                     high_threshold: float = MOT_HIGH_THRESHOLD) -> Iterator[tuple[int, float, list[Track]]]:
    """Track a MOTChallenge det file: ``(frame, t, tracks)`` for every frame from 1 on.

    ``t`` is ``(frame - 1) / fps`` seconds; ``tracks`` are the confirmed tracks matched
    in that frame (sort.Track). The file is read and checked before the first yield.
    """
    tracker = make_tracker(cfg or TrackConfig(), fps, high_threshold)
    dets = read_detections(path)

    def frames() -> Iterator[tuple[int, float, list[Track]]]:
        for frame, xyxy, score in iter_frames(dets):
            t = (frame - 1) / fps
            yield frame, t, tracker.update(xyxy, score, t=t).tracks

    return frames()


def track_mot(path: str | os.PathLike[str], fps: float, cfg: TrackConfig | None = None,
              high_threshold: float = MOT_HIGH_THRESHOLD, fill_gaps: bool = True) -> list[tuple]:
    """Track a MOTChallenge det file; rows ``(frame, id, x, y, w, h)``, by frame.

    ``fill_gaps``: when a track is found again after missed frames (within
    track.max_age_s), also write its box for those frames, on the straight line
    between where it was lost and where it was found, as ByteTrack's and OC-SORT's
    MOTChallenge results do. Offline only: the live pipeline reports what it sees.
    """
    rows: list[tuple] = []
    last: dict[int, tuple] = {}  # track id -> its last row
    for frame, _, tracks in track_mot_frames(path, fps, cfg, high_threshold):
        for t in tracks:
            x1, y1, x2, y2 = t.xyxy.tolist()
            row = (frame, t.id, x1, y1, x2 - x1, y2 - y1)
            prev = last.get(t.id)
            if fill_gaps and prev is not None and frame - prev[0] > 1:
                gap = frame - prev[0]
                rows.extend((f, t.id, *(a + (b - a) * (f - prev[0]) / gap for a, b in zip(prev[2:], row[2:])))
                            for f in range(prev[0] + 1, frame))
            rows.append(row)
            last[t.id] = row
    rows.sort(key=lambda r: (r[0], r[1]))
    return rows


def write_mot(rows: Iterable[tuple], stream: TextIO) -> None:
    """Write ``(frame, id, x, y, w, h)`` rows as MOTChallenge result lines."""
    stream.writelines(
        f"{int(frame)},{int(tid)},{x:.2f},{y:.2f},{w:.2f},{h:.2f},1,-1,-1,-1\n"
        for frame, tid, x, y, w, h in rows
    )


def main(det_path: str, stream: TextIO, fps: float, cfg: TrackConfig | None = None,
         high_threshold: float = MOT_HIGH_THRESHOLD) -> int:
    """``appliance track --mot DET_TXT --fps F``: track a det file, write results to ``stream``.

    Bad input raises ApplianceError for the CLI to report.
    """
    rows = track_mot(det_path, fps, cfg, high_threshold)
    write_mot(rows, stream)
    log.info("%s: %d result rows, %d tracks", det_path, len(rows), len({r[1] for r in rows}))
    return 0
