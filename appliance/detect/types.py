"""What every detector returns, whatever backend and decoder produced it."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Detections:
    """Detections of one frame, in source-image pixel coordinates."""

    xyxy: np.ndarray  # (N, 4) float32: x1, y1, x2, y2
    score: np.ndarray  # (N,) float32 in [0, 1]
    class_id: np.ndarray  # (N,) int32, index into the model's labels

    @staticmethod
    def empty() -> "Detections":
        return Detections(
            np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int32)
        )

    def __len__(self) -> int:
        return len(self.score)
