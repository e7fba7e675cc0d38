"""The stages on their own: end-of-stream hand-off, fault isolation, counters, and the
detect stage with the adaptive stride on a virtual clock (exact and repeatable)."""
from __future__ import annotations

import numpy as np

from appliance.capture.frame import Frame
from appliance.capture.hub import EndOfStream, FrameHub
from appliance.capture.stage import CaptureStage
from appliance.config import AdaptiveConfig
from appliance.control.adaptive import AdaptiveControl
from appliance.detect.stage import DetectStage
from appliance.detect.types import Detections
from appliance.events.lifecycle import Lifecycle
from appliance.events.sink import EventSink
from appliance.result import FrameResult
from appliance.stage import END, QueueStage
from appliance.track.sort import Sort
from appliance.track.stage import CameraTracking, TrackStage
from tests.unit.test_events import Collector

IMG = np.zeros((100, 200, 3), np.uint8)


def _frame(cam: str, seq: int, t: float = 0.0) -> Frame:
    return Frame(IMG, cam, seq, t, 1000.0 + seq / 10)


def _dets(x: float) -> Detections:
    return Detections(np.array([[x, 10, x + 30, 60]], np.float32), np.array([0.9], np.float32),
                      np.array([0], np.int32))


class Doubler(QueueStage):
    def handle(self, item):
        if item == 3:
            raise RuntimeError("bad item")
        self.done.append(item * 2)


def test_queue_stage_isolates_a_fault_to_its_item_and_ends_on_the_mark():
    s = Doubler("double")
    s.done = []
    s.start()
    for i in range(6):
        s.put(i)
    s.put(END)
    assert s.join(10)
    assert s.done == [0, 2, 4, 8, 10]
    assert (s.stats.items, s.stats.errors) == (6, 1)


class Exploding:
    def process(self, r: FrameResult) -> None:
        if r.frame.seq == 2:
            raise ValueError("processor bug")


def test_track_stage_runs_processors_gives_device_unique_ids_and_ends_tracks_at_end_of_stream():
    out = Collector()
    sink = EventSink("dev", out, first_seq=1)
    seen = []
    cam = CameraTracking(Sort(max_age_s=0.04, min_hits=1), [Lifecycle("dev", "c", ["person"], 60.0), Exploding()],
                         id_base=100)
    stage = TrackStage({"c": cam}, sink, on_result=seen.append)
    stage.start()
    for i in range(5):
        stage.put(FrameResult(_frame("c", i), _dets(10 + i)))
    stage.put(EndOfStream("c"))
    stage.put(END)
    assert stage.join(10)
    assert [(e.type, e.track_id) for e in out.events] == [("new", 101), ("end", 101)]
    assert [e.seq for e in out.events] == [1, 2]
    assert stage.stats.errors == 1  # frame 2's processor fault, alone
    assert cam.frames == 4 and not cam.reported  # every frame but the faulty one; nothing left live
    assert [r.frame.seq for r in seen] == [0, 1, 3, 4]  # the live view: real frames only
    assert all(t.id == 101 for r in seen for t in r.tracks)


class VirtualDetector:
    """Takes `service_s` of virtual time per image, and finds nothing."""

    def __init__(self, clock: list[float], service_s: float):
        self.clock, self.service_s = clock, service_s

    def detect(self, images):
        self.clock[0] += self.service_s * len(images)
        return [Detections.empty() for _ in images]


def test_detect_stage_with_a_slow_detector_steps_the_stride_down_once_and_keeps_up():
    """A 30 fps camera and a detector that needs 85 ms a frame (at most ~12 detections a
    second): the real capture hand-off, hub, detect stage and stride control on virtual
    time, so the outcome is the same on any machine."""
    clock = [0.0]
    now = lambda: clock[0]  # noqa: E731
    hub = FrameHub()
    hub.add_camera("cam", latest_wins=True)
    capture = CaptureStage("cam", hub)
    changes = []
    adaptive = AdaptiveControl(
        AdaptiveConfig(interval_s=0.5, cooldown_s=2.0, min_stride=1, max_stride=4), {"cam": 30.0},
        on_change=lambda cam, new, old, reason, detail: changes.append((round(now(), 2), old, new)),
        clock=now)
    results = Collector()
    results.put = lambda item: results.events.append(item)
    stage = DetectStage(VirtualDetector(clock, 0.085), hub, results, adaptive, {"cam": 0.05},
                        dropped=lambda cam: capture.dropped, clock=now)
    strides = []
    for i in range(30 * 20):  # 20 virtual seconds of camera
        due = i / 30
        while clock[0] < due and hub.depth("cam"):
            stage.step(timeout=0)
        clock[0] = max(clock[0], due)
        capture.deliver(_frame("cam", i, due), 0.0)
        strides.append(adaptive.stride("cam"))
    cam = stage.cameras["cam"]
    print(f"\nstride changes (virtual s, old, new): {changes}; detected {cam.detected}, skipped "
          f"{cam.skipped}, dropped {capture.dropped}, late {cam.late}; {adaptive.status('cam')}")
    assert [c[1:] for c in changes] == [(1, 2), (2, 3)]  # one way only, then steady
    assert strides[-1] == 3 and set(strides[-30 * 8:]) == {3}  # the last 8 s at stride 3
    assert adaptive.status("cam")["input_fps"] >= 0.85 * 30  # keeps up with the camera
    assert cam.late > 0  # frames wait in the slot up to a detection: older than 50 ms
    assert cam.detected + cam.skipped + capture.dropped + hub.depth("cam") == 600  # every frame, once
    assert all(isinstance(r, FrameResult) for r in results.events) and len(results.events) == cam.detected
