"""MOTChallenge text I/O: run the tracker on a det.txt file and write the results.

Detection lines are ``frame,id,x,y,w,h,score,...`` (top-left corner, size, in
pixels); result lines are ``frame,id,x,y,w,h,1,-1,-1,-1``.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from typing import TextIO

import numpy as np

from appliance.errors import ApplianceError
from appliance.track.sort import Sort

log = logging.getLogger(__name__)

__all__ = ["iter_frames", "main", "read_detections", "track_mot", "write_mot"]

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


def track_mot(path: str | os.PathLike[str], max_age: int = 1, min_hits: int = 3,
              iou_threshold: float = 0.3) -> list[tuple]:
    """Track a MOTChallenge det file; rows ``(frame, id, x, y, w, h)``.

    Uses the paper's warm-up reporting, as its MOTChallenge results did.
    """
    try:
        tracker = Sort(max_age, min_hits, iou_threshold, report_warmup=True)
    except ValueError as e:
        raise ApplianceError(f"tracker settings: {e}") from None
    rows = []
    for frame, xyxy, score in iter_frames(read_detections(path)):
        for t in tracker.update(xyxy, score).tracks:
            x1, y1, x2, y2 = t.xyxy.tolist()
            rows.append((frame, t.id, x1, y1, x2 - x1, y2 - y1))
    return rows


def write_mot(rows: Iterable[tuple], stream: TextIO) -> None:
    """Write ``(frame, id, x, y, w, h)`` rows as MOTChallenge result lines."""
    stream.writelines(
        f"{int(frame)},{int(tid)},{x:.2f},{y:.2f},{w:.2f},{h:.2f},1,-1,-1,-1\n"
        for frame, tid, x, y, w, h in rows
    )


def main(det_path: str, stream: TextIO, max_age: int = 1, min_hits: int = 3,
         iou_threshold: float = 0.3) -> int:
    """``appliance track --mot DET_TXT``: track a det file, write results to ``stream``.

    Bad input raises ApplianceError for the CLI to report.
    """
    rows = track_mot(det_path, max_age=max_age, min_hits=min_hits, iou_threshold=iou_threshold)
    write_mot(rows, stream)
    log.info("%s: %d result rows, %d tracks", det_path, len(rows), len({r[1] for r in rows}))
    return 0
