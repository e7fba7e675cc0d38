"""The unit that travels from a source down the pipeline."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # HxWx3 uint8, BGR (OpenCV's order)
    camera_id: str
    seq: int  # per camera, counts frames read from the source, 0-based
    t_capture_monotonic: float  # time.monotonic() when the frame was read
    t_capture_wall: float  # time.time() at the same moment
