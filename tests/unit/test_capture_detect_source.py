"""cameras[].detect_source: the config rules, the controller's extra rung, the capture's
switch between two sources, and boxes scaled back to the main stream's pixels.

The real thing (two RTSP streams of different sizes, the capture reconnecting between
them) is in tests/integration/test_detect_source.py.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from appliance import config
from appliance.capture.frame import MAIN, Frame
from appliance.capture.supervisor import CameraSupervisor, SupervisorPolicy
from appliance.config import AdaptiveConfig
from appliance.config.cameras import CameraConfig
from appliance.control.adaptive import AdaptiveControl, describe, describe_previous
from appliance.detect.stage import to_main_stream
from appliance.detect.types import Detections
from appliance.errors import ApplianceError
from tests.unit.test_control_adaptive import Sim

DEADLINE_S = 30.0  # guards against hangs only; nothing is timed


# -- config ---------------------------------------------------------------------------

def _error(tmp_path: Path, text: str) -> str:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ApplianceError) as e:
        config.load(p)
    return str(e.value)


def test_detect_source_of_an_rtsp_camera_and_size_of_a_v4l2_one():
    cam = CameraConfig(id="a", source="rtsp://h/main", detect_source="rtsp://h/sub")
    assert cam.has_detect_source
    usb = CameraConfig(id="b", source="v4l2:///dev/video0", width=1920, height=1080,
                       detect_source_size=[640, 360])
    assert usb.has_detect_source
    assert not CameraConfig(id="c", source="rtsp://h/main").has_detect_source


@pytest.mark.parametrize("camera, expected", [
    ("source: asset:vtest.avi\n    detect_source: rtsp://h/sub",
     "cameras[0].detect_source: only for live cameras"),
    ("source: rtsp://h/main\n    detect_source: v4l2:///dev/video1",
     "cameras[0].detect_source: must be the same kind of source as `source` (rtsp)"),
    ("source: rtsp://h/main\n    detect_source: ftp://h/sub",
     "cameras[0].detect_source: unsupported scheme 'ftp'"),
    ("source: rtsp://h/main\n    detect_source_size: [640, 360]",
     "cameras[0].detect_source_size: only for v4l2, csi and jetson cameras"),
    ("source: v4l2:///dev/video0\n    detect_source_size: [640]",
     "cameras[0].detect_source_size: expected [width, height]"),
    ("source: csi://0\n    detect_source_size: [640, 8]",
     "cameras[0].detect_source_size: expected [width, height], each 16..16384"),
])
def test_bad_detect_sources_name_the_key(tmp_path, camera, expected):
    msg = _error(tmp_path, f"cameras:\n  - id: a\n    {camera}\n")
    assert "c.yaml: " in msg and expected in msg


def test_a_password_in_a_bad_detect_source_is_masked(tmp_path):
    msg = _error(tmp_path, "cameras:\n  - id: a\n    source: rtsp://h/main\n"
                           "    detect_source: v4l2:///dev/video1\n"
                           "  - id: b\n    source: v4l2:///dev/video0\n"
                           "    detect_source: rtsp://u:secret@h/sub\n")
    assert "cameras[0].detect_source" in msg and "cameras[1].detect_source" in msg  # all at once
    assert "secret" not in msg


# -- boxes in the main stream's pixels ------------------------------------------------

def test_boxes_of_a_detect_source_frame_are_scaled_to_the_main_stream():
    img = np.zeros((180, 320, 3), np.uint8)
    img[45:90, 80:160] = 255
    frame = Frame(img, "a", 7, 1.0, 2.0, scale=(6.0, 6.0))  # a 320x180 sub-stream of 1920x1080
    dets = Detections(np.array([[80, 45, 160, 90]], np.float32), np.array([0.9], np.float32),
                      np.array([0], np.int32))
    f, d = to_main_stream(frame, dets)
    assert f.image.shape == (1080, 1920, 3) and f.scale == MAIN
    assert (f.seq, f.t_capture_monotonic, f.t_capture_wall) == (7, 1.0, 2.0)
    np.testing.assert_allclose(d.xyxy, [[480, 270, 960, 540]])
    assert d.xyxy.dtype == np.float32 and d.score[0] == pytest.approx(0.9)
    # the box lands on the same content in the enlarged image
    assert f.image[300:500, 500:900].min() == 255 and f.image[:250].max() == 0


def test_a_different_aspect_ratio_scales_each_axis():
    frame = Frame(np.zeros((480, 640, 3), np.uint8), "a", 0, 0.0, 0.0, scale=(3.0, 2.25))
    dets = Detections(np.array([[10, 20, 30, 40]], np.float32), np.ones(1, np.float32), np.zeros(1, np.int32))
    f, d = to_main_stream(frame, dets)
    assert f.image.shape[:2] == (1080, 1920)
    np.testing.assert_allclose(d.xyxy, [[30, 45, 90, 90]])


def test_main_stream_frames_pass_unchanged():
    frame = Frame(np.zeros((8, 8, 3), np.uint8), "a", 0, 0.0, 0.0)
    dets = Detections.empty()
    assert to_main_stream(frame, dets) == (frame, dets)


# -- the controller's extra rung --------------------------------------------------------

class CaptureSim(Sim):
    """Sim with one camera that has a detect source: on the main source every detection
    costs `main_factor` times more (decoding the main stream competes for the CPU)."""

    def __init__(self, cfg: AdaptiveConfig, fps: float, service_s: float, main_factor: float,
                 sizes: tuple[int, ...] = (640, 480, 320)):
        super().__init__(cfg, {"a": fps}, service_s, sizes=sizes)
        self.main_factor = main_factor
        self.switches: list[tuple[float, bool]] = []

        def changed(cam, new, old, reason, detail):
            self.changes.append((self.t, cam, old, new))
            self.details.append((self.t, cam, detail))

        self.ctl = AdaptiveControl(cfg, {"a": 0.0}, on_change=changed, clock=lambda: self.t, sizes=sizes,
                                   detect_sources={"a"},
                                   on_capture=lambda cam, low: self.switches.append((self.t, low)))

    def service(self, cam: str) -> float:
        s = super().service(cam)
        return s * self.main_factor if self.ctl.capture(cam) == "main" else s

    def levels(self) -> list[str]:
        return [describe(d) for *_, d in self.details]


CFG = AdaptiveConfig(interval_s=0.5, cooldown_s=2.0)


def test_switches_to_the_detect_source_first_and_holds_the_full_size_there():
    # 30 fps; the detector needs 45 ms a frame on main (22/s), 30 ms on the sub-stream (33/s)
    sim = CaptureSim(CFG, 30.0, service_s=0.030, main_factor=1.5)
    sim.run(40)
    assert sim.levels() == ["size 640 stride 1 on detect_source"]  # nothing after: it keeps up
    assert [low for _, low in sim.switches] == [True]
    d = sim.details[0][2]
    assert (d["capture"], d["previous_capture"], d["direction"]) == ("detect_source", "main", "down")
    assert describe_previous(d) == "size 640 stride 1 on main"
    assert sim.ctl.status("a")["capture"] == "detect_source"
    assert (sim.ctl.size("a"), sim.ctl.stride("a")) == (640, 1)


def test_then_sizes_and_strides_and_back_up_in_reverse_with_the_capture_last():
    sim = CaptureSim(CFG, 30.0, service_s=0.120, main_factor=1.5)  # 640 on the sub-stream: 8/s
    sim.run(60)
    down = sim.levels()
    assert down[0] == "size 640 stride 1 on detect_source"
    assert down[1:3] == ["size 480 stride 1 on detect_source", "size 320 stride 1 on detect_source"]
    assert all(d["direction"] == "down" for *_, d in sim.details)
    sim.service_s = 0.004  # the device got faster: room for everything again
    sim.run(60)
    assert sim.ctl.capture("a") == "main" and (sim.ctl.size("a"), sim.ctl.stride("a")) == (640, 1)
    ups = sim.levels()[len(down):]
    assert ups[-3:] == ["size 480 stride 1 on detect_source", "size 640 stride 1 on detect_source",
                        "size 640 stride 1 on main"]
    assert [low for _, low in sim.switches] == [True, False]
    assert sim.direction_changes("a") == 1


def test_back_to_main_waits_for_the_load_the_main_stream_measured():
    # On the sub-stream the detector is 55 % busy; main costs 2x per frame (measured before
    # the switch), so going back would need 110 %: it stays. Sizes alone would predict 55 %.
    sim = CaptureSim(CFG, 30.0, service_s=0.0185, main_factor=2.0, sizes=(640,))
    sim.run(60)
    assert [low for _, low in sim.switches] == [True]
    assert sim.ctl.capture("a") == "detect_source"


def test_cameras_without_a_detect_source_have_no_capture_rung():
    sim = Sim(CFG, {"a": 30.0}, service_s=0.045, sizes=(640, 480, 320))
    sim.run(20)
    assert "capture" not in sim.ctl.status("a")
    assert all("capture" not in d for *_, d in sim.details)
    assert describe(sim.details[0][2]) == "size 480 stride 1"


# -- the capture's switch between two sources -----------------------------------------

class FakeSource:
    """A camera source that serves frames of one size; counts its open connections."""

    def __init__(self, w: int, h: int):
        self.shape = (h, w, 3)
        self.opened = 0
        self.open_now = 0

    def connect(self):
        src = self
        src.opened += 1
        src.open_now += 1
        size = f"{self.shape[1]}x{self.shape[0]}"

        class _Reader:
            description = size

            def read(self):
                time.sleep(0.01)
                return True, np.full(src.shape, 9, np.uint8)

            def release(self):
                src.open_now -= 1

        return _Reader()


def _wait_for(cond) -> None:
    end = time.monotonic() + DEADLINE_S
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_supervisor_reconnects_to_the_detect_source_and_back_without_a_state_change():
    main, sub = FakeSource(64, 48), FakeSource(32, 16)
    frames: list[Frame] = []
    states: list[str] = []
    sup = CameraSupervisor("a", "main", main.connect, lambda f, s: frames.append(f) or True,
                           SupervisorPolicy(), on_state=lambda s, *_: states.append(s),
                           low=(sub.connect, "sub"), tick_s=0.01)
    stop = threading.Event()
    t = threading.Thread(target=sup.run, args=(stop,), daemon=True)
    t.start()
    try:
        _wait_for(lambda: len(frames) >= 3)
        assert frames[-1].image.shape == (48, 64, 3) and frames[-1].scale == MAIN
        assert sup.use_detect_source(True) and sup.capture == "detect_source"
        _wait_for(lambda: frames[-1].image.shape == (16, 32, 3))
        assert main.open_now == 0  # the main connection was let go before the sub-stream opened
        assert frames[-1].scale == (2.0, 3.0)  # to the main stream's 64x48
        assert sup.health()["capture"] == "detect_source" and sup.health()["source"] == "sub"
        sup.use_detect_source(False)
        _wait_for(lambda: frames[-1].image.shape == (48, 64, 3))
        assert frames[-1].scale == MAIN
    finally:
        stop.set()
        t.join(timeout=DEADLINE_S)
    assert (main.opened, sub.opened) == (2, 1)
    assert states == ["streaming"]  # a planned switch is not a stall
    seqs = [f.seq for f in frames]
    assert seqs == sorted(set(seqs))  # seq keeps counting across the switches


def test_a_camera_without_a_detect_source_ignores_the_switch():
    sup = CameraSupervisor("a", "main", FakeSource(8, 8).connect, lambda f, s: True, SupervisorPolicy())
    assert not sup.use_detect_source(True)
    assert sup.capture == "main" and "capture" not in sup.health()


def test_configured_size_scales_detect_source_frames_before_main_frames_arrive():
    sup = CameraSupervisor("a", "main", FakeSource(8, 8).connect, lambda f, s: True, SupervisorPolicy(),
                           low=(FakeSource(4, 4).connect, "sub"), main_size=(1920, 1080))
    assert sup._scale(1, np.zeros((360, 640, 3), np.uint8)) == (3.0, 3.0)
    assert sup._scale(0, np.zeros((720, 1280, 3), np.uint8)) == MAIN
    assert sup.main_size == (1280, 720)  # the main stream's own frames win
