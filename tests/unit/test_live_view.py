"""The live view's drawing: each track's box and caption, with the classifier's type once known."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from appliance.capture.frame import Frame
from appliance.detect.types import Detections
from appliance.live import _COLOURS, LiveView, track_text
from appliance.result import FrameResult
from appliance.track.sort import Track

LABELS = ["person", "bicycle", "car"]
FONT = cv2.FONT_HERSHEY_SIMPLEX
SCALE = 0.4  # what _draw uses for a picture this small
PICKUP = {"label": "pickup", "score": 0.8234, "votes": 3, "attempts": 4, "model": "m", "version": "1"}


def _result(attributes: dict) -> FrameResult:
    track = Track(7, np.array([40.0, 80.0, 220.0, 200.0]), 0.9, 2, 5, 5, 5, 0, True)
    return FrameResult(Frame(np.full((300, 480, 3), 90, np.uint8), "gate", 1, 0.0, 0.0), Detections.empty(),
                       tracks=[track], attributes=attributes)


@pytest.mark.parametrize("attributes, text", [
    (None, "7 car"),
    ({}, "7 car"),
    ({"speed": 3.0}, "7 car"),
    ({"classification": {"label": "pickup", "score": 0.8234}}, "7 car \u00b7 pickup 0.82"),
    ({"classification": PICKUP}, "7 car \u00b7 pickup 0.82"),
    ({"classification": {"label": "van"}}, "7 car \u00b7 van"),
    ({"classification": {"label": ""}}, "7 car"),
])
def test_caption_names_the_type_and_its_score_once_known(attributes, text):
    assert track_text(7, "car", attributes) == text


def test_a_track_without_a_type_is_drawn_as_before():
    img = LiveView(LABELS)._draw(_result({}))
    # The drawing of the release before the classifier, step by step.
    ref = np.full((300, 480, 3), 90, np.uint8)
    colour = _COLOURS[7 % len(_COLOURS)]
    cv2.rectangle(ref, (40, 80), (220, 200), colour, 2)
    (tw, th), _ = cv2.getTextSize("7 car", FONT, SCALE, 1)
    cv2.rectangle(ref, (40, 80 - th - 4), (40 + tw + 4, 80), colour, -1)
    cv2.putText(ref, "7 car", (42, 77), FONT, SCALE, (0, 0, 0), 1, cv2.LINE_AA)
    assert np.array_equal(img, ref)


def test_a_typed_track_is_captioned_class_dot_type_score():
    plain = LiveView(LABELS)._draw(_result({}))
    img = LiveView(LABELS)._draw(_result({7: {"classification": PICKUP}}))
    colour = np.array(_COLOURS[7 % len(_COLOURS)], np.uint8)
    th = cv2.getTextSize("0", FONT, SCALE, 1)[0][1]
    top = 80 - th - 4
    banner = np.flatnonzero((img[top] == colour).all(axis=1))  # the caption's background, top row
    plain_banner = np.flatnonzero((plain[top] == colour).all(axis=1))
    # Wide enough for "7 car", a dot, and "pickup 0.82".
    rest = cv2.getTextSize(" pickup 0.82", FONT, SCALE, 1)[0][0]
    assert banner[0] == plain_banner[0] == 40
    assert banner[-1] - plain_banner[-1] >= rest
    # "7 car " is drawn as before; then a dark dot (Hershey fonts have no middle dot: no "??").
    prefix_w = cv2.getTextSize("7 car ", FONT, SCALE, 1)[0][0]
    assert np.array_equal(img[top:80, 40:42 + prefix_w - 2], plain[top:80, 40:42 + prefix_w - 2])
    dot_w = cv2.getTextSize(".", FONT, SCALE, 1)[0][0]
    cx, cy = 42 + prefix_w + dot_w // 2, 77 - th // 2
    assert img[cy, cx].max() < 60, img[cy - 2:cy + 3, cx - 2:cx + 3]
    # And the type's letters: dark pixels across the banner's right part, where "pickup" goes.
    right = img[top:80, 42 + prefix_w + dot_w:banner[-1]]
    assert (right.max(axis=2) < 60).sum() > 40
    # The rest of the picture is the same.
    assert np.array_equal(img[81:], plain[81:])
