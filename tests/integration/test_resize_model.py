"""The input-size converter on the real static YOLOv8 export (yolov8_fall_fp16.onnx, input
[1, 3, 640, 640]) and the detector running it at the sizes its manifest declares, on real
vtest.avi frames. How the time per frame falls with the size: scripts/bench resolution."""
from __future__ import annotations

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from appliance.detect import load_detector
from appliance.detect.manifest import load_manifest
from appliance.detect.preprocess import prepare
from appliance.detect.resize import resize_model
from tests.integration.test_detect_models import inside, iou

FRAMES = (100, 200, 300)
PEOPLE = 0.2  # the fall model is weakly confident on this footage, less so at small sizes


@pytest.fixture(scope="module")
def frames(assets_dir):
    cap = cv2.VideoCapture(str(assets_dir / "vtest.avi"))
    out = []
    for i in range(max(FRAMES) + 1):
        ok, frame = cap.read()
        assert ok, f"vtest.avi ended at frame {i}"
        if i in FRAMES:
            out.append(frame)
    cap.release()
    return out


@pytest.fixture(scope="module")
def yolo(assets_dir, tmp_path_factory):
    # A fresh cache: the converted files are made by this load, not taken from an earlier run.
    return load_detector("yolov8-fall-test", assets_dir, threshold=0.1, threads=2,
                         cache_dir=tmp_path_factory.mktemp("cache"))


def test_at_640_the_converted_model_matches_the_original(assets_dir, frames):
    manifest = load_manifest("yolov8-fall-test", assets_dir)
    original = onnx.load(str(manifest.file))
    converted = resize_model(original, 640, 640)
    x, _ = prepare(frames[:1], manifest.input)
    opts = dict(providers=["CPUExecutionProvider"])
    want = ort.InferenceSession(str(manifest.file), **opts).run(None, {"images": x})[0]
    got = ort.InferenceSession(converted.SerializeToString(), **opts).run(None, {"images": x})[0]
    assert got.shape == want.shape == (1, 6, 8400)
    # fp16 tolerance: boxes are in pixels (up to 640), scores in 0..1
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)


def test_declared_sizes_are_converted_at_load(yolo):
    assert yolo.sizes == (640, 480, 320)
    for size in (480, 320):
        yolo.prepare(size)
        _, backend, _ = yolo._variants[size]
        assert backend.input_shape == (1, 3, size, size)
        assert backend.output_shapes == [(1, 6, sum((size // s) ** 2 for s in (8, 16, 32)))]


@pytest.mark.parametrize("size", [480, 320])
def test_smaller_sizes_still_find_the_people(yolo, frames, size):
    full = yolo.detect(frames, size=640)
    small = yolo.detect(frames, size=size)
    matched = []
    for f, ref, det in zip(frames, full, small):
        people = det.xyxy[det.score >= PEOPLE]  # best first
        assert len(people) >= 1, f"no person at {size} in a vtest frame"
        assert inside(det, f.shape[1], f.shape[0])
        # Boxes mapped back to source pixels: people found at the small size are people found
        # at full size (any score), at the same place. Smaller inputs merge some neighbours
        # into one box, so not all of them; the most confident one always.
        best = iou(people, ref.xyxy).max(axis=1)
        assert best[0] >= 0.5, f"{size}: IoU with the 640 boxes {np.round(best, 2)}"
        matched += list(best >= 0.5)
    assert np.mean(matched) >= 0.5, f"{size}: {sum(matched)} of {len(matched)} match a 640 box"
    print(f"\n{size}: {len(matched)} people in {len(frames)} frames, {sum(matched)} at a 640 box")


def test_full_size_through_the_detector_is_unchanged(yolo, assets_dir, frames):
    plain = load_detector("yolov8-fall-test", assets_dir, threshold=0.1, threads=2)
    for a, b in zip(plain.detect(frames), yolo.detect(frames, size=640)):
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=0.01)
        np.testing.assert_allclose(a.score, b.score, atol=1e-4)
