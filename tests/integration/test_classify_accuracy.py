"""The shipped classifier on labelled crops of the real media (tests/data/classify_crops.yaml):
accuracy must not fall below what was measured when the set was made, less a small margin.

The crops' labels were decided by looking at them. The confusion is printed (pytest -s, or
on failure), so a change of model, label map or preprocessing shows what moved.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from appliance.classify import load_classifier

CROPS = Path(__file__).resolve().parents[1] / "data" / "classify_crops.yaml"
# Measured with efficientnet-lite0-vehicle as shipped (margin 0.1, stretch): 11 of 33 crops.
# Most misses are vehicle crops the model is unsure of, whose summed "other" wins; see
# docs/classify.md. 2 crops of margin, for a runtime's rounding.
MEASURED = 11 / 33
MARGIN = 2 / 33
# Among the vehicle and bicycle crops, how often the best non-"other" label is right: 21 of 27.
MEASURED_TYPE = 21 / 27


@pytest.fixture(scope="module")
def classifier(assets_dir):
    return load_classifier("efficientnet-lite0-vehicle", assets_dir)


def _frames(assets_dir: Path, wanted: set[tuple[str, int]]) -> dict[tuple[str, int], np.ndarray]:
    """The frames the set names, decoded from the start of each file (seeking is not exact)."""
    out: dict[tuple[str, int], np.ndarray] = {}
    for asset in sorted({a for a, _ in wanted}):
        if not asset.endswith((".avi", ".mp4")):
            out[(asset, 0)] = cv2.imread(str(assets_dir / asset))
            continue
        cap = cv2.VideoCapture(str(assets_dir / asset))
        last = max(i for a, i in wanted if a == asset)
        for i in range(last + 1):
            ok, image = cap.read()
            assert ok, f"{asset}: frame {i} could not be read"
            if (asset, i) in wanted:
                out[(asset, i)] = image
        cap.release()
    return out


def _confusion(rows: list[tuple[str, str]]) -> str:
    labels = sorted({t for t, _ in rows} | {p for _, p in rows})
    counts = Counter(rows)
    col = max(len(x) for x in labels) + 2
    lines = ["truth \\ predicted".ljust(col + 8) + "".join(x.rjust(col) for x in labels)]
    for t in labels:
        if any(tt == t for tt, _ in rows):
            lines.append(t.ljust(col + 8) + "".join(str(counts[(t, p)] or ".").rjust(col) for p in labels))
    return "\n".join(lines)


def test_accuracy_on_labelled_crops(classifier, assets_dir):
    entries = yaml.safe_load(CROPS.read_text())["crops"]
    assert 15 <= len(entries) <= 40
    assert {e["label"] for e in entries} <= set(classifier.labels)
    frames = _frames(assets_dir, {(e["asset"], e.get("frame", 0)) for e in entries})
    crops = []
    for e in entries:
        crop = classifier.crop(frames[(e["asset"], e.get("frame", 0))], e["box"])
        assert crop is not None, f"{e}: no crop (box too small for min_size?)"
        crops.append(crop)
    predictions = classifier.classify(crops)
    rows = [(e["label"], p.label) for e, p in zip(entries, predictions)]
    # As the classify stage asks: the detector already said "vehicle", only the type is asked.
    typed = classifier.classify(crops, known=True)
    vehicles = [(e["label"], p.label) for e, p in zip(entries, typed) if e["label"] != "other"]
    accuracy = sum(t == p for t, p in rows) / len(rows)
    type_accuracy = sum(t == p for t, p in vehicles) / len(vehicles)
    print(f"\n{classifier.name}: {sum(t == p for t, p in rows)}/{len(rows)} crops right ({accuracy:.0%}); "
          f"best vehicle type right on {sum(t == p for t, p in vehicles)}/{len(vehicles)} vehicle crops")
    print(_confusion(rows))
    for e, p in zip(entries, predictions):
        if p.label != e["label"]:
            print(f"  {e['asset']} frame {e.get('frame', 0)} {e['box']}: {e['label']} -> {p.label} "
                  f"{p.score:.2f} (model: {p.model_label})")
    assert accuracy >= MEASURED - MARGIN
    assert type_accuracy >= MEASURED_TYPE - MARGIN


def test_dog_jpg_vehicle_is_a_pickup_like_type(classifier, assets_dir):
    """The vehicle top right in darknet's dog.jpg (a pickup with a camper shell), at the box the
    default detector gives it."""
    image = cv2.imread(str(assets_dir / "dog.jpg"))
    (p,) = classifier.classify([classifier.crop(image, [457.4, 80.6, 696.3, 173.5])])
    assert p.label in {"pickup", "truck", "suv", "van"}, p
    assert p.score > 0.3
