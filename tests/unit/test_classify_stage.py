"""The classify stage's rules, with a stand-in classifier that answers from a script:
which tracks get crops, voting, deciding once, the budget and the latest-wins queue.
The real model on real crops is in tests/integration/test_classify_*.py."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from appliance.capture.frame import Frame
from appliance.classify.stage import ClassifierStage, ClassifyTracks, TokenBucket
from appliance.config import ClassifyConfig
from appliance.detect.types import Detections
from appliance.events.lifecycle import Lifecycle
from appliance.result import FrameResult
from appliance.stage import END
from appliance.track.sort import Track

LABELS = ["person", "bicycle", "car"]


@dataclass(frozen=True)
class P:
    label: str
    score: float
    model_label: str = "x"


class Scripted:
    """Answers each crop with the next prediction of its script; crops like a real one."""

    name, version, min_size, margin = "scripted", "1", 8, 0.1

    def __init__(self, answers):
        self.answers = list(answers)
        self.seen = 0

    def classify(self, crops, known=False):
        out = []
        for _ in crops:
            out.append(self.answers[min(self.seen, len(self.answers) - 1)])
            self.seen += 1
        return out

    def crop(self, image, box):
        x1, y1, x2, y2 = (int(v) for v in box)
        if x2 - x1 < self.min_size or y2 - y1 < self.min_size:
            return None
        return image[y1:y2, x1:x2]


def _track(tid, box, class_id=2, confirmed=True):
    return Track(tid, np.array(box, float), 0.9, class_id, 5, 5, 5, 0, confirmed)


def _result(seq, tracks=(), ended=(), tentative=()):
    frame = Frame(np.zeros((200, 300, 3), np.uint8), "cam", seq, 0.0, 1000.0 + seq)
    return FrameResult(frame, Detections.empty(), tracks=list(tracks), ended=list(ended), tentative=list(tentative))


def _setup(answers, **cfg):
    c = ClassifyConfig(budget=1000.0, interval_frames=1, **cfg)
    stage = ClassifierStage(Scripted(answers), c)
    return stage, ClassifyTracks(stage, c, LABELS, "cam")


def _drain(stage: ClassifierStage) -> None:
    """Run the classifier over what is queued, on this thread."""
    while stage.depth:
        stage.handle(stage.inbox.get_nowait())


def test_votes_decide_once_and_the_type_never_flickers():
    stage, proc = _setup([P("van", 0.6), P("pickup", 0.7), P("pickup", 0.8), P("pickup", 0.9),
                          P("van", 0.9), P("van", 0.9), P("van", 0.9), P("van", 0.9)], min_votes=3)
    results = []
    for seq in range(10):
        r = _result(seq, [_track(7, (50, 50, 150, 120))])
        proc.process(r)
        _drain(stage)
        results.append(r.attributes.get(7, {}).get("classification"))
    # van, pickup, pickup: 2 of 3 pickup is not yet 3 votes; the 4th crop (pickup) decides.
    assert results[:4] == [None] * 4
    decided = results[4]
    assert decided == {"label": "pickup", "score": 0.8, "votes": 3, "attempts": 4,
                       "model": "scripted", "version": "1"}
    assert all(d == decided for d in results[4:])  # and no more crops after the decision
    assert stage.classifier.seen == 4


def test_a_type_decided_before_confirmation_is_in_the_new_event():
    # min_votes crops one a frame from the first detection, then one every interval_frames.
    c = ClassifyConfig(budget=1000.0, interval_frames=3, min_votes=3)
    stage = ClassifierStage(Scripted([P("pickup", 0.8)] * 10), c)
    proc = ClassifyTracks(stage, c, LABELS, "cam")
    lc = Lifecycle("dev", "cam", LABELS, update_interval_s=100.0)
    box = (50, 50, 150, 120)
    for seq in range(3):  # tentative: three crops, three votes
        r = _result(seq, tentative=[_track(5, box, confirmed=False)])
        proc.process(r)
        lc.process(r)
        _drain(stage)
        assert r.events == []  # never reported
    assert stage.classifier.seen == 3
    before = _hist_count("appliance_classify_decision_seconds")
    before_0_1 = _hist_bucket("appliance_classify_decision_seconds", "0.1")
    r = _result(3, [_track(5, box)])  # confirmed
    proc.process(r)
    lc.process(r)
    (new,) = r.events
    assert new.type == "new" and new.classification["label"] == "pickup" and new.classification["votes"] == 3
    # Observed once, as 0 s: decided before it was confirmed.
    assert _hist_count("appliance_classify_decision_seconds") - before == 1
    assert _hist_bucket("appliance_classify_decision_seconds", "0.1") - before_0_1 == 1
    assert stage.classifier.seen == 3  # decided: no more crops


def test_a_dropped_tentative_track_is_forgotten_and_the_interval_follows_min_votes():
    stage, proc = _setup([P("van", 0.5), P("car", 0.5)] * 20, min_votes=2, max_attempts=10)
    proc.cfg = ClassifyConfig(budget=1000.0, interval_frames=4, min_votes=2, max_attempts=10, min_share=0.9)
    proc.process(_result(0, tentative=[_track(8, (50, 50, 150, 120), confirmed=False)]))
    assert 8 in proc._tracks
    proc.process(_result(1))  # missed before confirmation: the tracker dropped it
    assert 8 not in proc._tracks
    asked = []
    for seq in range(2, 20):
        depth = stage.depth
        proc.process(_result(seq, [_track(9, (50, 50, 150, 120))]))
        if stage.depth > depth:
            asked.append(seq)
        _drain(stage)
    assert asked[:2] == [2, 3]  # min_votes (2) crops on consecutive frames ...
    assert asked[2:5] == [7, 11, 15]  # ... then one every interval_frames (4)


def test_only_whole_confirmed_boxes_of_classified_classes_get_crops():
    stage, proc = _setup([P("car", 0.9)])
    proc.process(_result(0, [_track(1, (0, 50, 100, 120)),  # cut by the left edge
                             _track(2, (50, 50, 150, 120), class_id=0),  # a person: not classified
                             _track(3, (50, 50, 53, 52)),  # too small for the model
                             _track(4, (np.nan, 50, 150, 120)),  # degenerate
                             _track(5, (100, 60, 200, 150))]))  # the one
    assert stage.depth == 1


def test_an_undecided_track_stops_after_max_attempts_and_counts_undecided():
    stage, proc = _setup([P("van", 0.5), P("car", 0.5)] * 20, min_votes=3, max_attempts=6, min_share=0.9)
    for seq in range(30):
        proc.process(_result(seq, [_track(9, (50, 50, 150, 120))]))
        _drain(stage)
    assert stage.classifier.seen == 6
    r = _result(30, ended=[_track(9, (50, 50, 150, 120))])
    proc.process(r)
    assert "classification" not in r.attributes.get(9, {})


def test_requests_over_budget_are_counted_not_made():
    c = ClassifyConfig(budget=2.0, interval_frames=1)
    clock = [0.0]
    stage = ClassifierStage(Scripted([P("car", 0.9)]), c, clock=lambda: clock[0])
    proc = ClassifyTracks(stage, c, LABELS, "cam")
    for seq in range(10):  # 10 frames in the same instant: the bucket holds 2
        proc.process(_result(seq, [_track(1, (50, 50, 150, 120))]))
    assert (stage.depth, stage.dropped["budget"]) == (2, 8)
    clock[0] += 1.0  # a second later: 2 more
    for seq in range(10, 14):
        proc.process(_result(seq, [_track(1, (50, 50, 150, 120))]))
    assert stage.depth == 4


def test_a_full_queue_drops_the_oldest_request():
    c = ClassifyConfig(budget=1000.0, interval_frames=1, queue_size=2)
    stage = ClassifierStage(Scripted([P("car", 0.9)]), c)
    proc = ClassifyTracks(stage, c, LABELS, "cam")
    proc.process(_result(0, [_track(t, (20 + 30 * t, 50, 40 + 30 * t, 120)) for t in range(1, 6)]))
    assert stage.depth == 2 and stage.dropped["queue"] == 3


def test_the_stage_thread_classifies_and_ends_on_the_mark():
    stage, proc = _setup([P("bus", 0.95)], min_votes=1)
    stage.start()
    proc.process(_result(0, [_track(3, (50, 50, 150, 120))]))
    stage.put(END)
    assert stage.join(10)
    r = _result(1, [_track(3, (50, 50, 150, 120))])
    proc.process(r)
    assert r.attributes[3]["classification"]["label"] == "bus"
    assert stage.stats.items == 1 and stage.status()["classified"] == 1


def test_lifecycle_events_carry_the_classification_and_the_snapshot():
    lc = Lifecycle("dev", "cam", LABELS, update_interval_s=1.0)
    t = _track(4, (50, 50, 150, 120))
    r0 = _result(0, [t])
    lc.process(r0)
    assert r0.events[0].classification is None and "classification" not in r0.events[0].to_json()
    known = {"label": "suv", "score": 0.7, "votes": 3, "attempts": 3, "model": "m", "version": "1"}
    r1 = _result(1, [t])
    r1.attributes[4] = {"classification": known}
    lc.process(r1)  # an update is due (1 s later)
    r2 = _result(2, ended=[t])
    r2.attributes[4] = {"snapshot": "cam-4.jpg"}
    lc.process(r2)
    (update,), (end,) = r1.events, r2.events
    assert update.classification == known and end.classification == known
    assert end.snapshot == "cam-4.jpg" and '"snapshot":"cam-4.jpg"' in end.to_json()


def _hist_count(name: str) -> float:
    return REGISTRY.get_sample_value(f"{name}_count") or 0.0


def _hist_bucket(name: str, le: str) -> float:
    return REGISTRY.get_sample_value(f"{name}_bucket", {"le": le}) or 0.0


def test_token_bucket_refills_at_its_rate():
    clock = [0.0]
    b = TokenBucket(4.0, clock=lambda: clock[0])
    assert sum(b.take() for _ in range(10)) == 4
    clock[0] = 0.5
    assert sum(b.take() for _ in range(10)) == 2


@pytest.mark.parametrize("bad", [{"min_votes": 5, "max_attempts": 3}, {"budget": 0}, {"budget": "fast"}])
def test_config_rules(bad):
    with pytest.raises(ValidationError):
        ClassifyConfig(**bad)
