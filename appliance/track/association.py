"""Matching detections to tracks: IoU, and the Hungarian assignment over a gated IoU."""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["assign", "iou_matrix"]

def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), xyxy -> (N, M)."""
    ax1, ay1, ax2, ay2 = (a[:, i : i + 1] for i in range(4))  # columns (N, 1)
    bx1, by1, bx2, by2 = b.T  # rows (M,)
    w = np.minimum(ax2, bx2) - np.maximum(ax1, bx1)
    h = np.minimum(ay2, by2) - np.maximum(ay1, by1)
    inter = np.maximum(w, 0.0) * np.maximum(h, 0.0)
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    # A degenerate pair (no area, nan) scores 0 rather than nan or a warning.
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0.0)


def assign(iou: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Matched (row, column) pairs of an IoU matrix (rows: detections, columns: tracks)
    with IoU >= threshold; the assignment maximises the total IoU of accepted pairs."""
    ok = iou >= threshold
    if threshold <= 0.0:
        ok &= iou > 0.0  # a threshold of 0 must not pair disjoint boxes
    if not ok.any():
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    # Below-threshold pairs are worth nothing to the assignment, so the Hungarian
    # solver cannot trade a good match for two rejected ones.
    rows, cols = linear_sum_assignment(np.where(ok, iou, 0.0), maximize=True)
    keep = ok[rows, cols]
    return rows[keep], cols[keep]
