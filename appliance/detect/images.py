"""`appliance detect IMAGE...`: one JSON line of detections per image."""
from __future__ import annotations

import json
from typing import Sequence, TextIO

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


def run_images(paths: Sequence[str], detector: Detector, out: TextIO, err: TextIO) -> int:
    """Detect on each image; 0 if all were read, 1 if any could not be (the rest still run)."""
    rc = 0
    for path in paths:
        image = read_image(path)
        if isinstance(image, str):
            err.write(f"appliance detect: {path}: {image}\n")
            err.flush()
            rc = 1
            continue
        det = detector.detect([image])[0]
        out.write(json.dumps({"image": path, "detections": describe(det, detector.labels)}) + "\n")
        out.flush()  # one line per image as it is done, for pipes
    return rc
