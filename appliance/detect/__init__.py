"""Object detection: load a model from its manifest and run it on frames.

    det = load_detector("ssd-mobilenet-v2", assets_dir, threshold=0.5, classes=["person"])
    [detections] = det.detect([bgr_frame])
"""
from __future__ import annotations

from appliance.detect.detector import Detector, describe, label_name, load_detector
from appliance.detect.images import run_images
from appliance.detect.manifest import InputSpec, ModelManifest, load_manifest
from appliance.detect.types import Detections

__all__ = [
    "Detections", "Detector", "InputSpec", "ModelManifest", "describe", "label_name",
    "load_detector", "load_manifest", "run_images",
]
