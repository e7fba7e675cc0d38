"""The self-check on the real detector and the reference images. Latency is judged on an
injected timer, so no outcome depends on this machine's speed."""
from __future__ import annotations

import pytest

from appliance.detect import load_detector
from appliance.modelstore.selfcheck import CheckPolicy, reference_images, self_check


@pytest.fixture(scope="module")
def ssd(assets_dir):
    return load_detector("ssd-mobilenet-v2", assets_dir, threshold=0.3, threads=1)


@pytest.fixture(scope="module")
def images(assets_dir):
    return reference_images(assets_dir)


def fake_timer(per_call_s: float):
    t = [0.0]

    def timer():
        t[0] += per_call_s  # each timed run reads it twice: per_call_s apart
        return t[0]
    return timer


def test_the_shipped_model_passes_against_itself(ssd, images):
    report = self_check(ssd, ssd, images=images, timer=fake_timer(0.05))
    assert report.ok, report.problems
    assert report.found["person.jpg"] >= 1 and report.found["dog.jpg"] >= 1
    assert report.found == report.baseline_found
    assert report.latency_ms == pytest.approx(50.0) and report.baseline_ms == pytest.approx(50.0)


def test_a_slower_candidate_is_refused(ssd, images):
    calls = {"n": 0}

    def timer():  # the candidate's runs come first: 6 timed runs (2 images x 3), then the baseline's
        calls["n"] += 1
        return calls["n"] * (0.5 if calls["n"] <= 12 else 0.005)
    report = self_check(ssd, ssd, images=images, timer=timer, policy=CheckPolicy(latency_factor=2.0))
    assert not report.ok
    assert any(p.startswith("too slow: 500.0 ms per image, the running model 5.0 ms (bound 2x + 5 ms = 15.0 ms)")
               for p in report.problems), report.problems


def test_a_candidate_that_finds_nothing_is_refused(ssd, images, assets_dir):
    # The real model, kept to a class that is in neither picture: it finds nothing there.
    blind = load_detector("ssd-mobilenet-v2", assets_dir, threshold=0.3, threads=1, classes=["toothbrush"])
    report = self_check(blind, ssd, images=images, timer=fake_timer(0.01))
    assert not report.ok
    assert report.problems == ["finds nothing from score 0.5 on person.jpg, dog.jpg, where the running model does"]
    alone = self_check(blind, None, images=images, timer=fake_timer(0.01))
    assert alone.problems == ["finds nothing from score 0.5 on any reference image (person.jpg, dog.jpg)"]
