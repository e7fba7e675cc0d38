"""The tracker's motion model: a constant-velocity Kalman filter in seconds, not frames.

State [cx, cy, s, r, vcx, vcy, vs] (centre in pixels, s = area in pixels^2, r = aspect
ratio w/h held constant; velocities per second), measurement [cx, cy, s, r], as in the
SORT paper (Bewley et al., 2016). The paper steps one frame at a time; the live pipeline
detects with a variable stride, so every prediction here takes the time since the last
one (dt), and the process noise grows with dt. The same filter then follows the same
object the same way at 10 and at 30 detections a second.

filterpy does the filtering; this module builds its matrices.
"""
from __future__ import annotations

import copy

import numpy as np
from filterpy.kalman import KalmanFilter

__all__ = ["dt_model", "new_filter", "predict", "states_to_xyxy", "xyxy_to_z"]

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
for _m in (_R, _P0, _H):
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


def _template() -> KalmanFilter:
    kf = KalmanFilter(dim_x=7, dim_z=4)
    kf.H, kf.R = _H, _R
    kf.F, kf.Q = dt_model(1.0 / _REF_FPS)
    for m in vars(kf).values():
        if isinstance(m, np.ndarray):
            # Shallow copies share these: filterpy rebinds its arrays rather than
            # writing into them, and read-only makes sure nothing ever does.
            m.flags.writeable = False
    return kf


_TEMPLATE = _template()


def new_filter(z: np.ndarray) -> KalmanFilter:
    """A filter at measurement ``z`` (4,), velocity unknown."""
    # A shallow copy of the template shares its read-only model matrices and is
    # several times cheaper than building a KalmanFilter from scratch.
    kf = copy.copy(_TEMPLATE)
    kf.x = np.zeros((7, 1))
    kf.x[:4, 0] = z
    kf.P = _P0.copy()
    return kf


def predict(kf: KalmanFilter, model: tuple[np.ndarray, np.ndarray]) -> None:
    """Move the filter ahead by ``model``, the (F, Q) of ``dt_model(dt)``."""
    f = model[0]
    if kf.F is not f:  # attributes, not arguments: filterpy then skips its checks
        kf.F, kf.Q = model
    x = kf.x
    if x[2, 0] + x[6, 0] * f[2, 6] <= 0.0:
        # A shrinking box would be predicted to a non-positive area: the area
        # velocity is wrong, so hold the area instead of losing the track.
        x[6, 0] = 0.0
    kf.predict()


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
