"""Second-stage classification of tracked objects (e.g. a vehicle's type).

    clf = load_classifier("efficientnet-lite0-vehicle", assets_dir)
    crop = clf.crop(frame, box_xyxy)   # None when too small or degenerate
    [prediction] = clf.classify([crop])

classifier.py is the model (manifest + backend + label map), manifest.py its model.yaml,
stage.py the pipeline's stage that feeds it track crops. docs/classify.md has the details.
"""
from __future__ import annotations

from appliance.classify.classifier import Classifier, Prediction, load_classifier
from appliance.classify.manifest import OTHER, ClassifierManifest, load_manifest

__all__ = ["OTHER", "Classifier", "ClassifierManifest", "Prediction", "load_classifier", "load_manifest"]
