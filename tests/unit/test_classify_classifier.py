"""The classifier's own logic with a stub backend: folding model classes into the vocabulary
(scores summed per label), crops (margin, clipping, degenerate boxes), batching, softmax.

The real runtimes are exercised in tests/integration/test_classify_backends.py.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from appliance.classify import Classifier, Prediction
from appliance.classify.classifier import _vocabulary
from appliance.classify.manifest import ClassifierInputSpec, ClassifierManifest
from appliance.errors import ApplianceError

MODEL_LABELS = ("pickup", "jeep", "minivan", "moving van", "sports car", "cab", "tabby", "toaster")
LABEL_MAP = {"pickup": "pickup", "jeep": "suv", "minivan": "van", "moving van": "van", "sports car": "car",
             "cab": "car", "toaster": "other"}


def manifest(**changes) -> ClassifierManifest:
    fields = dict(name="stub", version="1", path=Path("models/stub/model.yaml"), file=Path("stub.tflite"),
                  format="tflite", input=ClassifierInputSpec(8, 8), softmax=False, labels=MODEL_LABELS,
                  labels_source="the labels list", label_map=LABEL_MAP, label_map_source="label_map",
                  margin=0.1, min_size=4)
    fields.update(changes)
    return ClassifierManifest(**fields)


class StubBackend:
    """Returns the next rows of `scores` for each image of a batch; records the batches."""

    name, device, model_file = "stub", "cpu", Path("stub.tflite")
    output_names = ["scores"]
    metadata: dict = {}

    def __init__(self, scores, max_batch=1, fixed=True):
        self.scores = np.asarray(scores, np.float32)
        self.max_batch, self.fixed_batch = max_batch, fixed
        self.output_shapes = [(max_batch or -1, self.scores.shape[1])]
        self.inputs: list[np.ndarray] = []
        self._next = 0

    def run(self, x):
        self.inputs.append(x.copy())
        rows = self.scores[self._next:self._next + len(x)]
        self._next += len(x)
        out = np.zeros((len(x), self.scores.shape[1]), np.float32)
        out[:len(rows)] = rows
        return [out]


def classifier(scores, m: ClassifierManifest | None = None, **backend) -> Classifier:
    m = m or manifest()
    vocabulary, fold = _vocabulary(m, list(m.labels))
    return Classifier(m, StubBackend(scores, **backend), m.labels, vocabulary, fold)


def crop(n: int = 1) -> list[np.ndarray]:
    return [np.full((10, 12, 3), 50 * i, np.uint8) for i in range(n)]


def test_vocabulary_in_map_order_with_other_last():
    c = classifier([[0] * 8])
    assert c.labels == ("pickup", "suv", "van", "car", "other")
    assert c.model_labels == MODEL_LABELS and (c.margin, c.min_size) == (0.1, 4)


def test_scores_are_summed_per_vocabulary_label():
    # minivan 0.25 + moving van 0.2 = van 0.45 beats pickup 0.3, though pickup is the top class
    c = classifier([[0.3, 0.05, 0.25, 0.2, 0.0, 0.0, 0.1, 0.1]])
    (p,) = c.classify(crop())
    assert p == Prediction("van", pytest.approx(0.45), "pickup")


def test_unmapped_and_explicit_other_classes_sum_into_other():
    # tabby (unmapped) 0.3 + toaster (mapped to other) 0.25 = other 0.55
    c = classifier([[0.2, 0.1, 0.0, 0.0, 0.15, 0.0, 0.3, 0.25]])
    (p,) = c.classify(crop())
    assert (p.label, p.model_label) == ("other", "tabby") and p.score == pytest.approx(0.55)


def test_score_is_at_most_one():
    # independent (sigmoid) outputs can add up past 1
    (p,) = classifier([[0, 0, 0, 0, 0.9, 0.8, 0, 0]]).classify(crop())
    assert (p.label, p.score) == ("car", 1.0)


def test_without_a_label_map_the_model_classes_are_the_vocabulary():
    m = manifest(labels=("a", "", "b"), label_map=None)
    c = classifier([[0.2, 0.5, 0.3]], m)
    assert c.labels == ("a", "b", "other")
    (p,) = c.classify(crop())
    assert p == Prediction("other", 0.5, "class1")  # a gap in the labels counts as other


def test_softmax_applied_when_the_manifest_says_so():
    logits = [[1.5, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]]  # pickup is the top class, car the top label
    (p,) = classifier(logits, manifest(softmax=True)).classify(crop())
    e = np.exp(logits[0])
    assert p.label == "car" and p.score == pytest.approx((e[4] + e[5]) / e.sum(), rel=1e-5)
    assert p.model_label == "pickup"


def test_batch_one_backend_is_looped_and_order_kept():
    rows = np.eye(8, dtype=np.float32)[[0, 1, 2, 6, 4]]
    c = classifier(rows, max_batch=1, fixed=True)
    preds = c.classify(crop(5))
    assert [p.label for p in preds] == ["pickup", "suv", "van", "other", "car"]
    assert [x.shape[0] for x in c.backend.inputs] == [1] * 5


def test_dynamic_batch_backend_runs_once():
    c = classifier(np.eye(8, dtype=np.float32)[[5, 3, 7]], max_batch=None, fixed=False)
    assert [p.label for p in c.classify(crop(3))] == ["car", "van", "other"]
    assert [x.shape[0] for x in c.backend.inputs] == [3]


def test_fixed_batch_larger_than_the_crops():
    c = classifier(np.eye(8, dtype=np.float32)[[0, 1, 2]], max_batch=2, fixed=True)
    assert [p.label for p in c.classify(crop(3))] == ["pickup", "suv", "van"]
    assert [x.shape[0] for x in c.backend.inputs] == [2, 2]


def test_uint8_input_is_raw_rgb_pixels():
    c = classifier([[1] + [0] * 7])
    image = np.zeros((4, 4, 3), np.uint8)
    image[..., 0], image[..., 2] = 10, 200  # B, R
    c.classify([image])
    x = c.backend.inputs[0]
    assert x.dtype == np.uint8 and x.shape == (1, 8, 8, 3)
    assert np.all(x[0, ..., 0] == 200) and np.all(x[0, ..., 2] == 10)


def test_float_input_is_normalised_per_channel():
    spec = ClassifierInputSpec(8, 8, layout="nchw", dtype="float32", mean=(100.0, 0.0, 50.0), std=(2.0, 1.0, 50.0))
    c = classifier([[1] + [0] * 7], manifest(input=spec))
    c.classify([np.full((5, 5, 3), (150, 20, 100), np.uint8)])  # B, G, R
    x = c.backend.inputs[0]
    assert x.dtype == np.float32 and x.shape == (1, 3, 8, 8)
    assert np.allclose(x[0, :, 0, 0], [(100 - 100) / 2, (20 - 0) / 1, (150 - 50) / 50])


def test_non_finite_outputs_are_a_broken_model():
    with pytest.raises(ApplianceError, match="non-finite"):
        classifier([[np.nan] * 8]).classify(crop())


def test_describe():
    c = classifier([[0] * 8])
    assert c.describe(Prediction("van", 0.456789, "minivan")) == {
        "label": "van", "score": 0.4568, "model_label": "minivan", "model": "stub", "version": "1"}


def test_label_map_keys_must_be_model_classes():
    m = manifest(label_map={**LABEL_MAP, "pick-up": "pickup"})
    with pytest.raises(ApplianceError, match=r"models/stub/model\.yaml: label_map: 'pick-up' not a class of model "
                                             r"stub\.tflite \(its labels: the labels list\)"):
        _vocabulary(m, list(MODEL_LABELS))


# -- crops ---------------------------------------------------------------------------------------

IMAGE = np.arange(100 * 200 * 3, dtype=np.uint32).reshape(100, 200, 3).astype(np.uint8)


def cropper(margin=0.1, min_size=4) -> Classifier:
    return classifier([[0] * 8], manifest(margin=margin, min_size=min_size))


def test_crop_adds_the_margin():
    c = cropper(margin=0.1)
    out = c.crop(IMAGE, [50, 20, 150, 70])  # 100 x 50: 10 px and 5 px more on each side
    assert out.shape == (60, 120, 3)
    assert np.array_equal(out, IMAGE[15:75, 40:160])


def test_crop_is_a_copy():
    out = cropper().crop(IMAGE, np.array([10.0, 10.0, 50.0, 50.0], np.float32))
    out[...] = 0
    assert IMAGE[20, 20].any()


def test_crop_rounds_outwards():
    out = cropper(margin=0.0).crop(IMAGE, (10.4, 20.6, 30.2, 40.5))
    assert out.shape == (21, 21, 3) and np.array_equal(out, IMAGE[20:41, 10:31])


def test_crop_clipped_to_the_image():
    c = cropper(margin=0.2)
    out = c.crop(IMAGE, [-30, -10, 60, 40])
    assert np.array_equal(out, IMAGE[0:50, 0:78])
    out = c.crop(IMAGE, [180, 90, 250, 130])
    assert np.array_equal(out, IMAGE[82:100, 166:200])


@pytest.mark.parametrize("box", [
    [50, 20, 50, 70],  # zero width
    [50, 20, 150, 20],  # zero height
    [150, 20, 50, 70],  # inverted
    [50, 70, 150, 20],  # inverted
    [np.nan, 20, 150, 70],
    [50, 20, np.inf, 70],
    [300, 20, 400, 70],  # right of the image
    [-100, -100, -50, -50],  # above and left of it
])
def test_degenerate_boxes_give_none(box):
    assert cropper().crop(IMAGE, box) is None


def test_min_size_applies_to_the_crop():
    c = cropper(margin=0.0, min_size=32)
    assert c.crop(IMAGE, [10, 10, 41, 60]) is None  # 31 wide
    assert c.crop(IMAGE, [10, 10, 42, 60]).shape == (50, 32, 3)
    assert cropper(margin=0.1, min_size=32).crop(IMAGE, [10, 10, 39, 60]).shape[1] >= 32  # the margin counts
    assert c.crop(IMAGE, [190, 10, 260, 60]) is None  # 70 wide, but 10 of it inside the image


def test_box_must_have_four_numbers():
    with pytest.raises(ValueError, match="expected 4 numbers"):
        cropper().crop(IMAGE, [1, 2, 3])


def test_classify_nothing():
    assert classifier([[0] * 8]).classify([]) == []


def test_prediction_is_frozen():
    p = Prediction("car", 0.5, "cab")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.label = "van"  # type: ignore[misc]
