"""detect.threads auto with the real default model and runtime: it measures, caches, and
load_detector uses the choice. No speed is asserted, only that the choice is usable."""
from __future__ import annotations

import numpy as np
import pytest

from appliance.detect import load_detector, load_manifest, threads
from appliance.errors import ApplianceError


@pytest.fixture(autouse=True)
def _fresh_memo():
    threads.forget()
    yield
    threads.forget()


def test_real_measurement_with_the_default_model(assets_dir, tmp_path, monkeypatch):
    # Other processes busy on this machine would keep the choice out of the cache
    # (tests/unit/test_detect_threads.py checks that); here it must be cached.
    monkeypatch.setattr(threads, "cpu_sample", lambda: None)
    m = load_manifest("ssd-mobilenet-v2", assets_dir)
    cores = threads.usable_cores()
    chosen = threads.auto_threads(m, cache_dir=tmp_path)
    assert 1 <= chosen <= cores
    if cores > 1:
        assert (tmp_path / threads.CACHE_FILE).exists()
    threads.forget()  # as after a restart: the file answers
    det = load_detector("ssd-mobilenet-v2", assets_dir, threads="auto", cache_dir=tmp_path)
    assert det.backend.threads == chosen
    assert len(det.detect([np.zeros((240, 320, 3), np.uint8)])) == 1


def test_real_timer_gives_positive_fps(assets_dir):
    fps_of = threads.backend_timer(load_manifest("ssd-mobilenet-v2", assets_dir), batch_s=0.05)
    assert fps_of(1) > 0


def test_auto_on_a_corrupt_model_reports_the_model(assets_dir, tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\0" * 1000)
    manifest = tmp_path / "model.yaml"
    manifest.write_text(
        f"name: bad\nversion: '1'\nfile: {bad}\nformat: tflite\ndecoder: ssd\nlabels: [a]\n"
        "input: {width: 300, height: 300, resize: stretch, color: rgb, layout: nhwc, dtype: uint8}\n")
    with pytest.raises(ApplianceError, match=r"bad\.tflite: not a loadable TFLite model"):
        load_detector(str(manifest), assets_dir, threads="auto", cache_dir=tmp_path)


@pytest.mark.parametrize("bad", [0, -1, "two", 1.5, True, "AUTO"])
def test_load_detector_rejects_bad_threads(assets_dir, bad):
    with pytest.raises(ApplianceError, match="threads: must be a positive integer or 'auto'"):
        load_detector("ssd-mobilenet-v2", assets_dir, threads=bad)


def test_cpu_sample_reads_this_machine():
    sample = threads.cpu_sample()
    assert sample is None or (sample[1] > 0 and sample[2] > 0)
