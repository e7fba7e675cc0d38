"""The adaptive controller (input size, then stride) against a simulated camera and
detector (virtual time).

A camera delivers frames at a fixed rate into a latest-wins slot of two (as FrameHub
does); a detector with a fixed service time takes them when free, skipping the ones the
stride says to skip. The real detector and real video are in
tests/integration/test_adaptive_pipeline.py; this is for exact, repeatable dynamics.
"""
from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from appliance.capture.frame import Frame
from appliance.capture.hub import FrameHub
from appliance.capture.stage import CaptureStage
from appliance.config import AdaptiveConfig
from appliance.control.adaptive import AdaptiveControl, describe, describe_previous, ladder
from appliance.detect.stage import DetectStage
from appliance.detect.types import Detections
from tests.unit.test_events import Collector

IMG = np.zeros((48, 64, 3), np.uint8)


class Sim:
    def __init__(self, cfg: AdaptiveConfig, cams: dict[str, float], service_s: float,
                 targets: dict[str, float] | None = None, blocking: bool = False,
                 sizes: tuple[int, ...] = ()):
        self.t = 0.0
        self.cams = cams  # camera -> frames per second
        self.service_s = service_s  # per frame at the largest size; smaller sizes cost their area
        self.blocking = blocking
        self.changes: list[tuple[float, str, int, int]] = []
        self.details: list[tuple[float, str, dict]] = []
        self.full = max(sizes, default=None)

        def changed(cam, new, old, reason, detail):
            self.changes.append((self.t, cam, old, new))
            self.details.append((self.t, cam, detail))

        self.ctl = AdaptiveControl(cfg, targets or {c: 0.0 for c in cams}, on_change=changed,
                                   clock=lambda: self.t, sizes=sizes)

        self.slots = {c: deque() for c in cams}
        self.next_frame = {c: 0.0 for c in cams}
        self.dropped = {c: 0 for c in cams}
        self.handled = {c: 0 for c in cams}
        self.busy_until = 0.0

    def service(self, cam: str) -> float:
        size = self.ctl.size(cam)
        return self.service_s * (size / self.full) ** 2 if size and self.full else self.service_s

    def run(self, seconds: float, dt: float = 0.001) -> None:
        end = self.t + seconds
        while self.t < end:
            for c, fps in self.cams.items():
                while self.next_frame[c] <= self.t:
                    slot = self.slots[c]
                    if len(slot) >= 2:
                        if self.blocking:  # the source waits for room (a file played fast)
                            break
                        slot.popleft()
                        self.dropped[c] += 1
                    slot.append(self.next_frame[c])
                    self.next_frame[c] += 1.0 / fps
            if self.t >= self.busy_until:
                busy = 0.0
                for c in self.cams:  # the oldest frame of every ready camera, as one batch
                    if self.slots[c]:
                        self.slots[c].popleft()
                        self.handled[c] += 1
                        if self.ctl.take(c):
                            secs = self.service(c)
                            busy += secs
                            self.ctl.record_inference(c, secs)
                self.busy_until = self.t + busy
            self.ctl.update(self.dropped, now=self.t)
            self.t += dt

    def direction_changes(self, cam: str) -> int:
        dirs = [d["direction"] for _, c, d in self.details if c == cam]
        return sum(1 for a, b in zip(dirs, dirs[1:]) if a != b)


CFG = AdaptiveConfig(interval_s=0.5, cooldown_s=2.0)


def test_slow_detector_converges_without_oscillation():
    sim = Sim(CFG, {"a": 60.0}, service_s=0.040)  # detector: 25 frames/s; camera: 60
    sim.run(60)
    strides = [new for *_, new in sim.changes]
    assert strides == [2, 3]  # one step at a time, then steady
    assert sim.direction_changes("a") == 0
    assert sim.changes[-1][0] < 15  # converged early, nothing after
    before = sim.handled["a"]
    sim.run(10)
    assert (sim.handled["a"] - before) / 10 >= 0.95 * 60  # keeps up with the camera now
    st = sim.ctl.status("a")
    assert st["stride"] == 3 and st["target_fps"] == pytest.approx(60, rel=0.05)


def test_steps_back_up_when_the_detector_gets_faster():
    sim = Sim(CFG, {"a": 60.0}, service_s=0.040)
    sim.run(30)
    assert sim.ctl.stride("a") == 3
    sim.service_s = 0.005  # e.g. the device cooled down, or another camera went away
    sim.run(30)
    assert sim.ctl.stride("a") == 1
    assert [new for *_, new in sim.changes] == [2, 3, 2, 1]
    assert sim.direction_changes("a") == 1
    ups = [t for t, _, old, new in sim.changes if new < old]
    assert all(b - a >= CFG.cooldown_s for a, b in zip(ups, ups[1:]))  # cool-down between steps


@pytest.mark.parametrize("lo, hi", [(1, 2), (2, 3)])
def test_stride_stays_within_bounds(lo, hi):
    cfg = AdaptiveConfig(interval_s=0.5, cooldown_s=1.0, min_stride=lo, max_stride=hi)
    sim = Sim(cfg, {"a": 100.0}, service_s=0.050)  # would need stride 5+
    sim.run(40)
    assert all(lo <= new <= hi for *_, new in sim.changes)
    assert sim.ctl.stride("a") == hi
    sim.service_s = 0.001
    sim.run(40)
    assert sim.ctl.stride("a") == lo


def test_two_cameras_share_one_detector_and_settle():
    sim = Sim(CFG, {"a": 30.0, "b": 30.0}, service_s=0.025)  # 40 detections/s for 60 frames/s
    sim.run(60)
    for cam in "ab":
        assert sim.direction_changes(cam) <= 1
        assert not [c for c in sim.changes if c[1] == cam and c[0] > 30]  # steady in the 2nd half
    before = dict(sim.handled)
    sim.run(10)
    for cam in "ab":
        assert (sim.handled[cam] - before[cam]) / 10 >= 0.9 * 30


def test_fast_file_never_steps_down_without_an_explicit_target():
    # A file played fast waits for the detector: nothing is dropped, throughput is arrival.
    sim = Sim(CFG, {"a": 1000.0}, service_s=0.010, blocking=True)
    sim.run(20)
    assert sim.changes == []


def test_explicit_target_above_the_detector_rate_steps_down():
    sim = Sim(CFG, {"a": 1000.0}, service_s=0.010, blocking=True, targets={"a": 250.0})
    sim.run(30)
    assert sim.ctl.stride("a") == 3  # 100 detections/s x 3 = 300 >= 250
    assert sim.direction_changes("a") == 0


def test_disabled_holds_min_stride():
    cfg = AdaptiveConfig(enabled=False, min_stride=2, max_stride=4)
    sim = Sim(cfg, {"a": 60.0}, service_s=0.040)
    sim.run(20)
    assert sim.changes == [] and sim.ctl.stride("a") == 2
    taken = [sim.ctl.take("a") for _ in range(6)]
    assert taken.count(True) == 3  # every second frame is detected


# -- input sizes: a model whose manifest declares input_sizes [640, 480, 320] ------------------

SIZES = (640, 480, 320)


def levels(sim: Sim, cam: str = "a") -> list[tuple[int, int]]:
    return [(d["size"], d["stride"]) for _, c, d in sim.details if c == cam]


def test_ladder_is_sizes_first_then_strides():
    assert ladder((320, 640, 480), 1, 3) == [(640, 1), (480, 1), (320, 1), (320, 2), (320, 3)]
    assert ladder((), 2, 4) == [(None, 2), (None, 3), (None, 4)]


def test_steps_the_size_down_before_the_stride():
    # 640: 80 ms a frame (12.5/s), 480: 45 ms (22/s), 320: 20 ms (50/s); the camera gives 30/s.
    sim = Sim(CFG, {"a": 30.0}, service_s=0.080, sizes=SIZES)
    assert (sim.ctl.size("a"), sim.ctl.stride("a")) == (640, 1)
    sim.run(40)
    assert levels(sim) == [(480, 1), (320, 1)]  # the stride never moved: 320 keeps up
    assert sim.direction_changes("a") == 0
    before = sim.handled["a"]
    sim.run(10)
    assert (sim.handled["a"] - before) / 10 >= 0.95 * 30
    assert sim.ctl.status("a")["input_size"] == 320 and sim.ctl.status("a")["stride"] == 1


def test_then_the_stride_when_the_smallest_size_is_not_enough():
    sim = Sim(CFG, {"a": 60.0}, service_s=0.080, sizes=SIZES)  # 320 does 50/s, the camera 60/s
    sim.run(60)
    assert levels(sim) == [(480, 1), (320, 1), (320, 2)]
    assert sim.direction_changes("a") == 0


def test_steps_back_up_stride_first_then_sizes_when_there_is_headroom():
    sim = Sim(CFG, {"a": 60.0}, service_s=0.080, sizes=SIZES)
    sim.run(60)
    assert (sim.ctl.size("a"), sim.ctl.stride("a")) == (320, 2)
    sim.service_s = 0.010  # the device got faster (cooled down, a camera went away): 640 does 100/s
    sim.run(60)
    assert levels(sim)[3:] == [(320, 1), (480, 1), (640, 1)]
    assert sim.direction_changes("a") == 1
    ups = [t for t, _, d in sim.details if d["direction"] == "up"]
    assert all(b - a >= CFG.cooldown_s for a, b in zip(ups, ups[1:]))


def test_does_not_step_up_into_a_size_it_cannot_hold():
    # 640 needs 80 ms (12.5/s) and 480 45 ms (22/s): a 20/s camera settles at 480 for good,
    # even though 320 leaves the detector idle half the time (the prediction scales by area).
    sim = Sim(CFG, {"a": 20.0}, service_s=0.080, sizes=SIZES)
    sim.run(90)
    assert sim.ctl.size("a") == 480 and sim.ctl.stride("a") == 1
    assert sim.direction_changes("a") <= 1
    assert not [t for t, *_ in sim.changes if t > 45]  # steady in the second half


def test_each_step_is_an_event_with_size_and_stride():
    sim = Sim(CFG, {"a": 60.0}, service_s=0.080, sizes=SIZES)
    sim.run(60)
    _, cam, d = sim.details[0]
    assert cam == "a"
    assert d["size"] == 480 and d["previous_size"] == 640 and d["stride"] == d["previous_stride"] == 1
    assert d["direction"] == "down" and d["target_fps"] == pytest.approx(60, rel=0.05)
    assert 0 < d["throughput_fps"] < 60 and d["detector_load"] > 0.85
    assert describe(d) == "size 480 stride 1" and describe_previous(d) == "size 640 stride 1"
    last = sim.details[-1][2]
    assert (last["previous_size"], last["size"], last["previous_stride"], last["stride"]) == (320, 320, 1, 2)
    assert describe({"stride": 3, "size": None}) == "stride 3"


def test_input_sizes_off_steps_the_stride_alone():
    cfg = AdaptiveConfig(interval_s=0.5, cooldown_s=2.0, input_sizes=False)
    sim = Sim(cfg, {"a": 30.0}, service_s=0.080, sizes=SIZES)
    sim.run(40)
    assert sim.ctl.size("a") is None  # the detector's own size
    assert [new for *_, new in sim.changes] == [2, 3]


def test_min_input_size_turns_to_the_stride_sooner():
    cfg = AdaptiveConfig(interval_s=0.5, cooldown_s=2.0, min_input_size=480)
    sim = Sim(cfg, {"a": 30.0}, service_s=0.080, sizes=SIZES)  # 480 does 22/s: stride 2 holds 30
    sim.run(40)
    assert levels(sim) == [(480, 1), (480, 2)]
    cfg = AdaptiveConfig(min_input_size=1000)  # above every size: the full size, stride alone
    assert AdaptiveControl(cfg, {"a": 0.0}, sizes=SIZES).size("a") is None


def test_a_new_detector_with_other_sizes_keeps_each_cameras_stride():
    # A model switch (DetectStage.swap) to a model with sizes 416, 320, 256.
    sim = Sim(CFG, {"a": 60.0}, service_s=0.080, sizes=SIZES)
    sim.ctl.set_sizes(SIZES)  # the same sizes: nothing moves
    assert (sim.ctl.size("a"), sim.ctl.stride("a")) == (640, 1)
    sim.ctl.set_sizes((416, 320, 256))
    assert (sim.ctl.size("a"), sim.ctl.stride("a")) == (416, 1)  # nothing as large: the largest
    sim.ctl.set_sizes(SIZES)
    sim.run(60)
    assert (sim.ctl.size("a"), sim.ctl.stride("a")) == (320, 2)
    sim.ctl.set_sizes((416, 320, 256))
    assert (sim.ctl.size("a"), sim.ctl.stride("a")) == (256, 2)  # strides step at the smallest size
    sim.ctl.set_sizes(())  # a model with one size: stride only
    assert (sim.ctl.size("a"), sim.ctl.stride("a")) == (None, 2)
    sim.ctl.set_sizes((640, 320))
    assert (sim.ctl.size("a"), sim.ctl.stride("a")) == (320, 2)


class SizedDetector:
    """A stand-in detector with input sizes: `service_s` of virtual time per frame at 640,
    its area's share at smaller sizes. Records the sizes it was asked for."""

    name, version, sizes = "sized", "1", SIZES

    def __init__(self, clock: list[float], service_s: float):
        self.clock, self.service_s = clock, service_s
        self.prepared: list[int] = []
        self.calls: list[int] = []

    def prepare(self, size: int) -> None:
        if size != 640 and size not in self.prepared:  # 640: loaded with the detector
            self.prepared.append(size)
            self.clock[0] += 1.0  # making a session is slow, and must not count as inference

    def detect(self, images, size=None):
        size = size or 640
        self.calls.append(size)
        self.clock[0] += self.service_s * (size / 640) ** 2 * len(images)
        return [Detections.empty() for _ in images]


def run_stage(cfg: AdaptiveConfig, fps: float, service_s: float, seconds: float):
    """The real hub and detect stage on virtual time: one camera at `fps`, a SizedDetector."""
    clock = [0.0]
    now = lambda: clock[0]  # noqa: E731
    hub = FrameHub()
    hub.add_camera("cam", latest_wins=True)
    capture = CaptureStage("cam", hub)
    events: list[dict] = []
    adaptive = AdaptiveControl(cfg, {"cam": fps}, clock=now, sizes=SIZES,
                               on_change=lambda cam, new, old, reason, detail: events.append(detail))
    results = Collector()
    results.put = lambda item: results.events.append(item)
    det = SizedDetector(clock, service_s)
    stage = DetectStage(det, hub, results, adaptive, {"cam": 1.0}, dropped=lambda cam: capture.dropped,
                        clock=now)
    for i in range(int(fps * seconds)):
        due = i / fps
        while clock[0] < due and hub.depth("cam"):
            stage.step(timeout=0)
        clock[0] = max(clock[0], due)
        capture.deliver(Frame(IMG, "cam", i, due, 1000.0 + due), 0.0)
    return adaptive, stage, det, events


def test_detect_stage_runs_each_camera_at_its_controllers_size():
    """A 20 fps camera, a detector that needs 80 ms a frame at 640 (12.5/s), 45 at 480."""
    adaptive, stage, det, events = run_stage(AdaptiveConfig(interval_s=0.5, cooldown_s=2.0), 20.0, 0.080, 30)
    assert describe(events[0]) == "size 480 stride 1"
    assert adaptive.size("cam") == 480 and adaptive.stride("cam") == 1
    assert det.prepared == [480]  # made once, on the first step down
    assert det.calls[0] == 640 and det.calls[-1] == 480  # the frames ran at the controller's size
    assert max(stage.cameras["cam"].infer_s) < 0.5  # the session's making was not timed as inference
    assert adaptive.status("cam")["input_fps"] >= 0.9 * 20


def test_an_unreachable_target_holds_the_last_level_without_oscillating():
    # 480 at max_stride cannot keep up (a detection takes longer than the slot's two frames
    # last, so frames drop in bursts); stepping back up would only drop more.
    cfg = AdaptiveConfig(interval_s=1.0, cooldown_s=3.0, max_stride=8, min_input_size=480)
    adaptive, *_, events = run_stage(cfg, 10.0, 1.0, 90)  # 480: 0.56 s a frame
    assert (adaptive.size("cam"), adaptive.stride("cam")) == (480, 8)
    assert [e["direction"] for e in events] == ["down"] * 8
