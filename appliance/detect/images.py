"""`appliance detect IMAGE...`: one JSON line of detections per image."""
from __future__ import annotations

import json
from typing import Any, Collection, Sequence, TextIO

import cv2
import numpy as np

from appliance.detect.detector import Detector, describe


def read_image(path: str) -> np.ndarray | str:
    """The image as BGR uint8, or a short reason it cannot be read.

    Reads the bytes ourselves and decodes them, so the reason is ours (not found, not an
    image) rather than an OpenCV warning on stderr.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return e.strerror or type(e).__name__
    if not data:
        return "empty file"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        return "not a readable image (corrupt or unsupported format)"
    return image


def add_classifications(rows: list[dict], xyxy: np.ndarray, image: np.ndarray, classifier: Any,
                        classes: Collection[str]) -> None:
    """Each detection (rows from describe(), boxes xyxy) whose label is in `classes` gains
    "classification": the classifier's answer on its crop (appliance/classify/), or None
    when the box is too small to be worth classifying."""
    todo = [(row, classifier.crop(image, box)) for row, box in zip(rows, xyxy) if row["label"] in classes]
    predictions = iter(classifier.classify([crop for _, crop in todo if crop is not None], known=True))
    for row, crop in todo:
        row["classification"] = classifier.describe(next(predictions)) if crop is not None else None


def run_images(paths: Sequence[str], detector: Detector, out: TextIO, err: TextIO,
               classifier: Any = None, classify_classes: Collection[str] = ()) -> int:
    """Detect on each image; 0 if all were read, 1 if any could not be (the rest still run).

    With a classifier (appliance.classify.Classifier), detections of `classify_classes` also
    get their "classification" (add_classifications)."""
    rc = 0
    for path in paths:
        image = read_image(path)
        if isinstance(image, str):
            err.write(f"appliance detect: {path}: {image}\n")
            err.flush()
            rc = 1
            continue
        det = detector.detect([image])[0]
        rows = describe(det, detector.labels)
        if classifier is not None:
            add_classifications(rows, det.xyxy, image, classifier, set(classify_classes))
        out.write(json.dumps({"image": path, "detections": rows}) + "\n")
        out.flush()  # one line per image as it is done, for pipes
    return rc
