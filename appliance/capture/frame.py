"""The unit that travels from a source down the pipeline."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAIN = (1.0, 1.0)


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # HxWx3 uint8, BGR (OpenCV's order)
    camera_id: str
    seq: int  # per camera, counts frames read from the source, 0-based
    t_capture_monotonic: float  # time.monotonic() when the frame was read
    t_capture_wall: float  # time.time() at the same moment
    # (x, y) factors from this image's pixels to the camera's main-stream pixels: not
    # (1, 1) while the capture runs on cameras[].detect_source (a lower resolution).
    scale: tuple[float, float] = MAIN
    # Files: the frame's time in the video (seq / fps, counting on across loops). None for
    # live cameras, whose capture time is their timeline.
    t_video: float | None = None

    @property
    def t(self) -> float:
        """Seconds on the camera's own timeline, for what measures time between frames (track
        lifetimes, dwell, speed): the video's time for files, so that a file processed with
        --fast means the same as played in real time; the capture time for live cameras."""
        return self.t_capture_monotonic if self.t_video is None else self.t_video
