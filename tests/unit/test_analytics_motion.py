"""Speed and heading against synthetic tracks of known speed seen through a known
perspective: the calibration gives km/h right at every depth, where one metres-per-pixel
factor is wrong by a multiple; jumps and absurd speeds are never reported."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from appliance.analytics.motion import MAX_SPEED_KMH, GroundPlane, MotionEstimator

# A camera looking down a road: ground (X across, Y along, metres) -> image pixels.
WORLD = np.float32([[0, 0], [10, 0], [10, 40], [0, 40]])  # a 10 m x 40 m patch of road
IMAGE = np.float32([[100, 470], [540, 470], [370, 130], [270, 130]])  # near edge wide, far edge narrow
TO_IMAGE = cv2.getPerspectiveTransform(WORLD, IMAGE)


def _image_point(x_m: float, y_m: float) -> tuple[float, float]:
    p = cv2.perspectiveTransform(np.float32([[[x_m, y_m]]]), TO_IMAGE)[0, 0]
    return float(p[0]), float(p[1])


def _drive(est: MotionEstimator, speed_kmh: float, fps: float = 10.0, seconds: float = 4.0,
           x_m: float = 5.0, y0: float = 38.0, noise_px: float = 0.0, seed: int = 0):
    """A track driving towards the camera along Y; its motions, frame by frame."""
    rng = np.random.default_rng(seed)
    v = speed_kmh / 3.6
    out = []
    for i in range(int(seconds * fps)):
        t = i / fps
        x, y = _image_point(x_m, y0 - v * t)
        x, y = x + rng.normal(0, noise_px), y + rng.normal(0, noise_px)
        out.append(est.update(1, t, (x, y), box_h=40.0))
    return out


@pytest.mark.parametrize("speed", [5.0, 30.0, 50.0])
def test_calibrated_speed_is_right_at_every_depth(speed):
    est = MotionEstimator(GroundPlane(IMAGE, WORLD))
    motions = [m for m in _drive(est, speed, seconds=min(4.0, 36 / (speed / 3.6))) if m is not None]
    assert len(motions) >= 5
    for m in motions:  # from 38 m away (a pixel is half a metre there) to close by
        assert m.speed_kmh == pytest.approx(speed, rel=0.02)
        assert m.heading_deg == pytest.approx(270.0, abs=1)  # towards -Y on the ground


def test_calibrated_speed_with_detector_jitter_is_smoothed():
    est = MotionEstimator(GroundPlane(IMAGE, WORLD))
    motions = [m for m in _drive(est, 30.0, seconds=2.0, y0=20.0, noise_px=1.0, seed=3) if m is not None]
    assert len(motions) >= 10
    assert np.median([m.speed_kmh for m in motions]) == pytest.approx(30.0, rel=0.1)


def test_one_metres_per_pixel_factor_is_not_a_calibration():
    """What peers do: one scale measured at one depth. Far away a pixel is many metres."""
    near_scale = 10.0 / (540 - 100)  # metres per pixel along the near edge
    est = MotionEstimator(None)
    far = [m for m in _drive(est, 50.0, seconds=1.5) if m is not None]
    naive_kmh = far[-1].speed_px_s * near_scale * 3.6
    assert naive_kmh < 0.5 * 50  # the naive figure is off by a multiple ...
    cal = MotionEstimator(GroundPlane(IMAGE, WORLD))
    right = [m for m in _drive(cal, 50.0, seconds=1.5) if m is not None]
    assert right[-1].speed_kmh == pytest.approx(50.0, rel=0.05)  # ... the transform is not


def test_without_calibration_only_heading_and_pixel_speed():
    est = MotionEstimator(None)
    out = [est.update(1, i / 10, (100.0 + 3 * i, 200.0), 40.0) for i in range(10)]
    assert out[:3] == [None, None, None]  # not before 0.3 s and 3 positions
    m = out[-1]
    assert m.speed_kmh is None and m.heading_deg == pytest.approx(0.0)
    assert m.speed_px_s == pytest.approx(30.0)
    assert m.fields() == {"speed_px_s": 30.0, "heading_deg": 0.0}
    still = [est.update(2, i / 10, (100.0, 200.0 + (i % 2) * 0.5), 40.0) for i in range(10)][-1]
    assert still.heading_deg is None  # standing: no heading


def test_a_jump_is_never_a_speed():
    est = MotionEstimator(GroundPlane(IMAGE, WORLD))
    motions = []
    for i in range(40):
        t = i / 10
        y = 30 - 1.4 * t if i < 20 else 5 - 1.4 * t  # 25 m in 0.1 s at i=20: an id switch
        motions.append(est.update(1, t, _image_point(5, y), 40.0))
    speeds = [m.speed_kmh for m in motions if m is not None and m.speed_kmh is not None]
    assert speeds and max(speeds) < 6.0
    assert all(m is None for m in motions[20:23])  # the window starts again after the jump
    assert max(speeds) <= MAX_SPEED_KMH


def test_points_above_the_horizon_have_no_ground_position():
    plane = GroundPlane(IMAGE, WORLD)
    assert plane.to_world(320, 470) is not None
    horizon_y = min(y for _, y in [_image_point(5, d) for d in (1e4, 1e5)])
    assert plane.to_world(320, horizon_y - 50) is None
