"""The stride controller against a simulated camera and detector (virtual time).

A camera delivers frames at a fixed rate into a latest-wins slot of two (as FrameHub
does); a detector with a fixed service time takes them when free, skipping the ones the
stride says to skip. The real detector and real video are in
tests/integration/test_adaptive_pipeline.py; this is for exact, repeatable dynamics.
"""
from __future__ import annotations

from collections import deque

import pytest

from appliance.config import AdaptiveConfig
from appliance.control.adaptive import AdaptiveControl


class Sim:
    def __init__(self, cfg: AdaptiveConfig, cams: dict[str, float], service_s: float,
                 targets: dict[str, float] | None = None, blocking: bool = False):
        self.t = 0.0
        self.cams = cams  # camera -> frames per second
        self.service_s = service_s
        self.blocking = blocking
        self.changes: list[tuple[float, str, int, int]] = []
        self.ctl = AdaptiveControl(cfg, targets or {c: 0.0 for c in cams},
                                   on_change=lambda cam, new, old, reason, d: self.changes.append(
                                       (self.t, cam, old, new)),
                                   clock=lambda: self.t)
        self.slots = {c: deque() for c in cams}
        self.next_frame = {c: 0.0 for c in cams}
        self.dropped = {c: 0 for c in cams}
        self.handled = {c: 0 for c in cams}
        self.busy_until = 0.0

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
                            busy += self.service_s
                            self.ctl.record_inference(c, self.service_s)
                self.busy_until = self.t + busy
            self.ctl.update(self.dropped, now=self.t)
            self.t += dt

    def direction_changes(self, cam: str) -> int:
        dirs = [1 if new > old else -1 for _, c, old, new in self.changes if c == cam]
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
