"""Activation, refusal and automatic rollback on the real detect stage, stepped by hand
with real vtest.avi frames and the real model (no threads but the rollback's)."""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import pytest

from appliance.capture.frame import Frame
from appliance.capture.hub import FrameHub
from appliance.config import AdaptiveConfig
from appliance.control.adaptive import AdaptiveControl
from appliance.detect import load_detector
from appliance.detect.stage import DetectStage
from appliance.modelstore.selfcheck import CheckPolicy
from appliance.modelstore.store import ModelRef, ModelStore, ModelStoreError
from appliance.modelstore.swap import ModelManager, WatchPolicy

NAME = "ssd-mobilenet-v2-coco"
# Latency is the self-check's own business (test_modelstore_selfcheck.py, on an injected
# timer); here it must never decide, whatever else runs on the machine.
NO_LATENCY = CheckPolicy(latency_factor=1e6)


class Results:
    def __init__(self):
        self.items = []

    def put(self, item):
        self.items.append(item)


@pytest.fixture(scope="module")
def frames(assets_dir):
    cap = cv2.VideoCapture(str(assets_dir / "vtest.avi"))
    out = []
    while len(out) < 60:
        ok, img = cap.read()
        assert ok
        out.append(img)
    return out


@pytest.fixture
def rig(tmp_path: Path, assets_dir: Path):
    store = ModelStore(tmp_path / "data")
    store.install("ssd-mobilenet-v2", assets_dir, version="2", check=False)

    def load(path):
        # Version "dogs" is the same weights kept to dogs and horses: it passes the
        # self-check (a horse in person.jpg, a dog in dog.jpg) and finds next to nothing
        # among vtest.avi's pedestrians, so its detection rate collapses there.
        classes = ["dog", "horse"] if path is not None and path.parent.name == "dogs" else None
        return load_detector(str(path) if path else "ssd-mobilenet-v2", assets_dir, threshold=0.3,
                             threads=1, classes=classes)
    hub = FrameHub()
    hub.add_camera("cam", latest_wins=False)
    results = Results()
    adaptive = AdaptiveControl(AdaptiveConfig(enabled=False), {"cam": 30.0})
    stage = DetectStage(load(None), hub, results, adaptive, {"cam": 10.0}, dropped=lambda cam: 0)
    events = []
    manager = ModelManager(store, stage, load, None, state=lambda *a: events.append(a), check=NO_LATENCY,
                           watch=WatchPolicy(min_frames=20, watch_s=1e9, score=0.5), assets_dir=assets_dir)

    def feed(images, start):
        for i, img in enumerate(images):
            hub.put(Frame(img, "cam", start + i, time.monotonic(), time.time()))
            stage.step(timeout=0)
    return store, stage, manager, results, events, feed, load


def test_activate_switches_between_frames_and_loses_none(rig, frames):
    store, stage, manager, results, events, feed, _ = rig
    feed(frames[:20], 0)
    out = manager.activate(f"{NAME}@2")
    assert out["active"] == f"{NAME}@2" and out["previous"] == "detect.model" and out["check"]["ok"]
    feed(frames[20:40], 20)
    models = [r.model["version"] for r in results.items]
    assert [r.frame.seq for r in results.items] == list(range(40))  # every frame, once, in order
    assert models == ["coco-quant-postprocess-7046f31a"] * 20 + ["2"] * 20
    assert store.active() == ModelRef(NAME, "2") and store.history() == [None]
    assert events[-1][:3] == ("model", "", f"{NAME}@2") and events[-1][3] == "detect.model"
    assert manager.last["first_frame_s"] is not None

    manager.rollback()
    feed(frames[40:45], 40)
    assert [r.model["version"] for r in results.items[40:]] == ["coco-quant-postprocess-7046f31a"] * 5
    assert store.active() is None and store.history() == []
    with pytest.raises(ModelStoreError, match="no previous model version"):
        manager.rollback()


def test_a_collapsing_detection_rate_is_rolled_back_automatically(rig, frames, assets_dir):
    store, stage, manager, results, events, feed, _ = rig
    store.install("ssd-mobilenet-v2", assets_dir, version="dogs", check=False)
    feed(frames[:20], 0)  # the running model's rate: people in every frame
    manager.activate(f"{NAME}@dogs")
    feed(frames[20:45], 20)
    for _ in range(100):  # the rollback runs on its own thread
        if manager.running is None:
            break
        time.sleep(0.05)
    feed(frames[45:50], 45)
    assert manager.running is None and store.active() is None
    assert results.items[-1].model["version"] == "coco-quant-postprocess-7046f31a"
    kind, camera, state, previous, reason, detail = events[-1]
    assert (kind, state, previous) == ("model", "detect.model", f"{NAME}@dogs")
    assert reason.startswith("detection rate collapsed: 0.00 detections per frame over 20 frames")
    assert detail["previous_rate"] > 1
    assert [r.frame.seq for r in results.items] == list(range(50))


def test_bad_activations_are_refused_and_the_running_model_stays(rig, frames, assets_dir):
    store, stage, manager, results, events, feed, _ = rig
    running = stage.detector
    with pytest.raises(ModelStoreError, match=r"model nope@1 is not installed \(installed: "
                                              rf"{NAME}@2\)"):
        manager.activate("nope@1")
    # A weights file damaged after install.
    weights = store.path(ModelRef(NAME, "2")) / "mobilenet_ssd_v2_coco_quant_postprocess.tflite"
    data = bytearray(weights.read_bytes())
    data[4096] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelStoreError, match="has sha256 .*recorded at install .*refused"):
        manager.activate(f"{NAME}@2")
    assert events[-1][2] == "rejected" and "recorded at install" in events[-1][4]
    # Another detector (other labels): the track processors were built for these.
    yolo = store.install("yolov8-fall-test", assets_dir, check=False)
    with pytest.raises(ModelStoreError, match="labels differ from the running model's"):
        manager.activate(yolo)
    # A candidate that fails the self-check: finds nothing where the running model does.
    store.install("ssd-mobilenet-v2", assets_dir, version="blind", check=False)
    manager._load = lambda path, load=manager._load: (
        load_detector(str(path), assets_dir, threads=1, classes=["toothbrush"]) if path else load(path))
    with pytest.raises(ModelStoreError, match="self-check failed: finds nothing from score 0.5 on person.jpg"):
        manager.activate(f"{NAME}@blind")
    feed(frames[:5], 0)
    assert stage.detector is running and manager.running is None and store.active() is None
    assert all(r.model["version"] == "coco-quant-postprocess-7046f31a" for r in results.items)


def test_the_store_changed_by_the_cli_is_followed(rig, frames):
    store, stage, manager, results, events, feed, _ = rig
    store.set_active(ModelRef(NAME, "2"))  # what `appliance model activate` leaves
    manager.poll()
    feed(frames[:3], 0)
    assert manager.running == ModelRef(NAME, "2")
    assert [r.model["version"] for r in results.items] == ["2"] * 3
    store.rollback()  # `appliance model rollback`
    manager.poll()
    feed(frames[3:6], 3)
    assert manager.running is None and results.items[-1].model["version"] != "2"


def test_start_runs_the_active_version_unless_it_is_damaged(rig, caplog):
    from appliance.modelstore.runtime import first_detector

    store, _, _, _, _, _, load = rig
    assert first_detector(store, load)[1] is None  # nothing active: detect.model
    store.set_active(ModelRef(NAME, "2"))
    det, running = first_detector(store, load)
    assert running == ModelRef(NAME, "2") and det.version == "2"
    (store.path(running) / "coco_labels.txt").write_text("0 cat\n")
    det, running = first_detector(store, load)
    assert running is None and det.version != "2"
    assert "coco_labels.txt has sha256" in caplog.text and "starting with detect.model instead" in caplog.text
