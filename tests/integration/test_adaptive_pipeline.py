"""Adaptive stride in the real pipeline: the real detector against a camera faster than it,
and an artificially slowed detector, on the demo video (bikes.mp4) played like a camera.

Only outcomes are asserted (it stepped, one way, within bounds, every change logged and
stored), never a rate: the exact dynamics, including keeping up with the camera, are
tested on virtual time in tests/unit/test_stages.py and tests/unit/test_control_adaptive.py."""
from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

import cv2
from prometheus_client import REGISTRY

from appliance import config
from appliance.detect import load_detector
from appliance.pipeline import Pipeline


def camera_video(assets_dir: Path, dest: Path, fps: float) -> Path:
    """bikes.mp4 as an MJPEG file declaring `fps`, at half size so decoding stays cheap;
    played with realtime: true it is a camera delivering `fps` frames per second."""
    cap = cv2.VideoCapture(str(assets_dir / "bikes.mp4"))
    out = cv2.VideoWriter(str(dest), cv2.VideoWriter_fourcc(*"MJPG"), fps, (320, 136))
    while True:
        ok, img = cap.read()
        if not ok:
            break
        out.write(cv2.resize(img, (320, 136)))
    out.release()
    cap.release()
    return dest


def bare_fps(assets_dir: Path, threads: int) -> float:
    det = load_detector("ssd-mobilenet-v2", assets_dir, threads=threads)
    cap = cv2.VideoCapture(str(assets_dir / "bikes.mp4"))
    frames = [cap.read()[1] for _ in range(40)]
    det.detect(frames[:1])
    t0 = time.perf_counter()
    for f in frames:
        det.detect([f])
    return len(frames) / (time.perf_counter() - t0)


def run_and_sample(p: Pipeline, cam: str, seconds: float) -> list[tuple[float, int]]:
    """Run the pipeline for `seconds`, sampling the camera's stride every 0.1 s."""
    samples = []
    p.start()
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < seconds:
            samples.append((time.monotonic() - t0, p.adaptive.stride(cam)))
            time.sleep(0.1)
        status = p.status()["cameras"][cam]
    finally:
        p.stop()
        p.join()
    p.final_camera_status = status
    return samples


def direction_changes(strides: list[int]) -> int:
    steps = [b - a for a, b in zip(strides, strides[1:]) if b != a]
    return sum(1 for x, y in zip(steps, steps[1:]) if (x > 0) != (y > 0))


def stored_adaptive_events(data_dir: Path) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(data_dir / "appliance.db")
    rows = conn.execute("SELECT camera, json_extract(payload, '$.previous'), json_extract(payload, '$.state') "
                        "FROM events WHERE type = 'adaptive' ORDER BY seq").fetchall()
    conn.close()
    return rows


ADAPTIVE = {"interval_s": 0.5, "cooldown_s": 2.0, "min_stride": 1, "max_stride": 4}


def test_real_detector_on_a_camera_faster_than_it_steps_down(assets_dir, data_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="appliance.control.adaptive")
    cfg = config.Config()
    bare = bare_fps(assets_dir, cfg.detect.threads)
    fps = max(100.0, round(2.5 * bare))  # a camera this detector cannot keep up with at stride 1
    video = camera_video(assets_dir, tmp_path / "fast.avi", fps)
    cfg = config.from_dict({"cameras": [{"id": "fast", "source": str(video), "loop": True}],
                            "adaptive": ADAPTIVE})
    p = Pipeline(cfg, data_dir)
    samples = run_and_sample(p, "fast", 12.0)
    strides = [s for _, s in samples]
    st = p.final_camera_status
    print(f"\nadaptive, real detector: bare {bare:.1f} fps, camera {fps:g} fps; strides over time "
          f"{sorted(set(strides))}, final {strides[-1]}; handled {st['input_fps']} fps, "
          f"detected {st['fps']} fps, dropped {st['dropped']}, skipped {st['skipped']}")
    assert strides[0] == 1 and max(strides) >= 2  # it stepped down
    assert all(1 <= s <= 4 for s in strides)  # within the configured bounds
    assert st["skipped"] > 0  # frames handled beyond what was detected
    events = stored_adaptive_events(data_dir)
    assert events and events[0] == ("fast", "stride 1", "stride 2")
    logged = [r.message for r in caplog.records if r.message.startswith("adaptive: camera fast: stride")]
    assert len(logged) == len(events)  # every change logged and stored
    assert REGISTRY.get_sample_value("appliance_adaptive_stride", {"camera": "fast"}) == strides[-1]
    assert REGISTRY.get_sample_value("appliance_adaptive_changes_total",
                                     {"camera": "fast", "direction": "down"}) >= 1


class Slowed:
    """The real detector, then a sleep per image: a detector slower than the camera."""

    def __init__(self, detector, delay_s: float):
        self._detector, self.delay_s = detector, delay_s

    def detect(self, images):
        out = self._detector.detect(images)
        time.sleep(self.delay_s * len(images))
        return out

    def __getattr__(self, name):
        return getattr(self._detector, name)


def test_slowed_detector_converges_and_does_not_oscillate(assets_dir, data_dir, tmp_path):
    video = camera_video(assets_dir, tmp_path / "cam30.avi", 30.0)
    cfg = config.from_dict({"cameras": [{"id": "slow", "source": str(video), "loop": True,
                                         "late_after_s": 0.05}],
                            "adaptive": ADAPTIVE})
    p = Pipeline(cfg, data_dir)
    p.detect.detector = Slowed(p.detect.detector, 0.060)  # at most ~14 detections/s for a 30-fps camera
    samples = run_and_sample(p, "slow", 20.0)
    strides = [s for _, s in samples]
    st = p.final_camera_status
    changes = [(round(t, 1), s) for (t, s), (_, prev) in zip(samples[1:], samples) if s != prev]
    print(f"\nadaptive, slowed detector: stride changes (s, stride) {changes}; handled "
          f"{st['input_fps']} fps of 30, detected {st['fps']} fps")
    assert direction_changes(strides) == 0 and max(strides) >= 2  # stepped down, only ever one way
    # A frame waits up to one slow detection in its slot: older than 50 ms, so late.
    assert st["late"] > 0 and REGISTRY.get_sample_value("appliance_frames_late_total", {"camera": "slow"}) >= st["late"]
    assert [e[2] for e in stored_adaptive_events(data_dir)] == [f"stride {s}" for _, s in changes]
