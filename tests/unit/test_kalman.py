"""The tracker's batched Kalman filters (appliance/track/kalman.py) against filterpy's
KalmanFilter, which they replaced for speed: one filterpy filter per row, given the same
steps, must end where the rows do."""
from __future__ import annotations

import numpy as np
from filterpy.kalman import KalmanFilter

from appliance.track import kalman


def _filterpy(z: np.ndarray) -> KalmanFilter:
    kf = KalmanFilter(dim_x=7, dim_z=4)
    kf.H, kf.R, kf.P = kalman._H.copy(), kalman._R.copy(), kalman._P0.copy()
    kf.x[:4, 0] = z
    return kf


def test_rows_follow_filterpy_step_for_step():
    rng = np.random.default_rng(7)
    boxes = rng.uniform(50, 400, (5, 2))
    xyxy = np.hstack([boxes, boxes + rng.uniform(20, 120, (5, 2))])
    z0 = kalman.xyxy_to_z(xyxy)  # (4, 5)
    rows = kalman.Filters()
    rows.add(z0[:, :3])
    refs = [_filterpy(z0[:, i]) for i in range(3)]
    for step in range(40):
        if step == 10:  # two more targets join
            rows.add(z0[:, 3:])
            refs += [_filterpy(z0[:, i]) for i in range(3, 5)]
        dt = (0.04, 0.1, 0.033, 0.2)[step % 4]  # uneven time steps, as a strided detector gives
        f, q = kalman.dt_model(dt)
        for kf in refs:
            if kf.x[2, 0] + kf.x[6, 0] * f[2, 6] <= 0.0:
                kf.x[6, 0] = 0.0
            kf.predict(F=f, Q=q)
        rows.predict((f, q))
        seen = np.array([i for i in range(len(refs)) if (i + step) % 3])  # some go unmatched
        moved = xyxy[seen] + step * 2.0 + rng.normal(0, 2, (len(seen), 4))
        z = kalman.xyxy_to_z(moved)
        for k, i in enumerate(seen):
            refs[i].update(z[:, k])
        rows.update(seen, z)
        expect_x = np.stack([kf.x for kf in refs])
        expect_p = np.stack([kf.P for kf in refs])
        np.testing.assert_allclose(rows.x, expect_x, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(rows.P, expect_p, rtol=1e-9, atol=1e-6)
    rows.keep(np.array([True, False, True, True, False]))
    np.testing.assert_allclose(rows.boxes(), kalman.states_to_xyxy(np.concatenate(
        [refs[i].x for i in (0, 2, 3)], axis=1)), rtol=1e-9)
