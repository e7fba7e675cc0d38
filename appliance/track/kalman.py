"""The tracker's motion model: a constant-velocity Kalman filter in seconds, not frames.

State [cx, cy, s, r, vcx, vcy, vs] (centre in pixels, s = area in pixels^2, r = aspect
ratio w/h held constant; velocities per second), measurement [cx, cy, s, r], as in the
SORT paper (Bewley et al., 2016). The paper steps one frame at a time; the live pipeline
detects with a variable stride, so every prediction here takes the time since the last
one (dt), and the process noise grows with dt. The same filter then follows the same
object the same way at 10 and at 30 detections a second.

All of a tracker's filters are stepped together (``Filters``): one row of arrays per
target instead of a filterpy object each, which was most of the tracker's time. The
equations are filterpy's (KalmanFilter.predict and update, Joseph-form covariance),
applied in the same order with the same numpy/BLAS products, batched: the results are
the same to the last bit as one filterpy filter per target.
"""
from __future__ import annotations

import numpy as np

__all__ = ["Filters", "dt_model", "states_to_xyxy", "xyxy_to_z"]

# Noise, converted from the per-frame values tuned at 25 fps on TUD-Campus and
# TUD-Stadtmitte (tests/integration/test_mot_metrics.py), so that dt = 1/25 s gives
# exactly the old filter.
_REF_FPS = 25.0
# Detector jitter: a few pixels on the centre. The same variance is tiny for the area
# (so the box size follows the detector) and large for the aspect ratio (so the box
# shape is smoothed over several frames).
_R = np.diag([10.0, 10.0, 10.0, 10.0])
# A new track knows its box from one detection and nothing of its velocity:
# 100 px/frame at 25 fps, as a standard deviation.
_P0 = np.diag([10.0, 10.0, 10.0, 10.0] + [1e4 * _REF_FPS**2] * 3)
# Process noise per second of prediction (a random walk: variance grows linearly with
# dt). Walkers and cars change velocity slowly; the area's rate changes slower still.
_Q_RATE = np.array([1.0, 1.0, 1.0, 1.0, 1e-3 * _REF_FPS**2, 1e-3 * _REF_FPS**2,
                    1e-5 * _REF_FPS**2]) * _REF_FPS
_H = np.eye(4, 7)
_I = np.eye(7)
for _m in (_R, _P0, _H, _I):
    _m.flags.writeable = False  # shared by every track: nothing may write into them

_cache: dict[float, tuple[np.ndarray, np.ndarray]] = {}


def dt_model(dt: float) -> tuple[np.ndarray, np.ndarray]:
    """(F, Q) for a prediction of ``dt`` seconds (dt >= 0), read-only and cached.

    Times are rounded to 0.1 ms for the cache: a video's frame times repeat, so a
    camera uses a handful of entries; the cache is cleared if it ever grows large.
    """
    dt = round(max(dt, 0.0), 4)
    hit = _cache.get(dt)
    if hit is not None:
        return hit
    f = np.eye(7)
    f[0, 4] = f[1, 5] = f[2, 6] = dt
    q = np.diag(_Q_RATE * dt)
    f.flags.writeable = q.flags.writeable = False
    if len(_cache) > 256:
        _cache.clear()
    _cache[dt] = (f, q)
    return f, q


class Filters:
    """The Kalman filters of a tracker's targets, one row each: ``x`` (T, 7, 1) states
    and ``P`` (T, 7, 7) covariances, as filterpy keeps them per filter.

    Rows stay in the order they were added; ``keep`` removes some. Each step is
    filterpy's, term by term, as one batched product: numpy hands every row to the
    same BLAS routine that filterpy's ``dot`` calls for one filter, so a row ends up
    bit-identical to a filterpy filter given the same calls (checked on the MOT15 runs).
    """

    __slots__ = ("x", "P")

    def __init__(self) -> None:
        self.x = np.zeros((0, 7, 1))
        self.P = np.zeros((0, 7, 7))

    def add(self, z: np.ndarray) -> None:
        """New rows at measurements ``z`` (4, N), velocity unknown."""
        x = np.zeros((z.shape[1], 7, 1))
        x[:, :4, 0] = z.T
        self.x = np.concatenate((self.x, x))
        self.P = np.concatenate((self.P, np.broadcast_to(_P0, (len(x), 7, 7))))

    def keep(self, rows: np.ndarray) -> None:
        """Keep only ``rows`` (a boolean mask or indices), in order."""
        self.x = self.x[rows]
        self.P = self.P[rows]

    def predict(self, model: tuple[np.ndarray, np.ndarray]) -> None:
        """Move every row ahead by ``model``, the (F, Q) of ``dt_model(dt)``."""
        f, q = model
        x = self.x
        # A shrinking box would be predicted to a non-positive area: the area
        # velocity is wrong, so hold the area instead of losing the track.
        hold = x[:, 2, 0] + x[:, 6, 0] * f[2, 6] <= 0.0
        if hold.any():
            x[hold, 6, 0] = 0.0
        self.x = f @ x  # x = F x
        self.P = f @ self.P @ f.T + q  # P = F P F' + Q

    def update(self, rows: np.ndarray, z: np.ndarray) -> None:
        """Correct ``rows`` (indices) with their measurements ``z`` (4, len(rows))."""
        x, p = self.x[rows], self.P[rows]
        y = z.T[:, :, None] - _H @ x  # residual
        pht = p @ _H.T
        s = _H @ pht + _R  # system uncertainty
        k = pht @ np.linalg.inv(s)  # gain, (n, 7, 4)
        self.x[rows] = x + k @ y
        # Joseph form, as filterpy: P = (I - KH) P (I - KH)' + K R K'
        i_kh = _I - k @ _H
        self.P[rows] = i_kh @ p @ i_kh.transpose(0, 2, 1) + k @ _R @ k.transpose(0, 2, 1)

    def boxes(self) -> np.ndarray:
        """(T, 4) xyxy boxes of every row; nan where the area or aspect is not positive."""
        return states_to_xyxy(self.x[:, :4, 0].T)


def xyxy_to_z(xyxy: np.ndarray) -> np.ndarray:
    """(N, 4) boxes -> (4, N) measurements [cx, cy, s, r], one column per box."""
    x1, y1, x2, y2 = xyxy.T
    w = x2 - x1
    h = y2 - y1
    z = np.empty((4, len(xyxy)))
    z[0] = x1 + 0.5 * w
    z[1] = y1 + 0.5 * h
    z[2] = w * h
    z[3] = w / h
    return z


def states_to_xyxy(x: np.ndarray) -> np.ndarray:
    """(7 or 4, N) states -> (N, 4) boxes; a non-positive area or aspect gives nan."""
    cx, cy, s, r = x[0], x[1], x[2], x[3]
    with np.errstate(invalid="ignore", divide="ignore"):
        half_w = 0.5 * np.sqrt(s * r)
        half_h = 0.25 * s / half_w
    half_h[(s <= 0.0) | (r <= 0.0)] = np.nan  # both negative would give a finite w
    out = np.empty((len(cx), 4))
    out[:, 0] = cx - half_w
    out[:, 1] = cy - half_h
    out[:, 2] = cx + half_w
    out[:, 3] = cy + half_h
    return out
