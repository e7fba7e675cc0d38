"""Preprocessing: resize modes, tensor layout, and the exact inverse box transform."""
from __future__ import annotations

import numpy as np
import pytest

from appliance.detect.manifest import InputSpec
from appliance.detect.preprocess import PAD_VALUE, plan, prepare, to_network, to_source


def test_stretch_inverse_maps_known_box_exactly():
    t = plan(768, 576, 300, 300, "stretch")
    net = np.array([[0, 0, 300, 300], [75, 150, 150, 225]], np.float32)
    src = to_source(net, t)
    np.testing.assert_allclose(src, [[0, 0, 768, 576], [192, 288, 384, 432]], atol=1e-4)


def test_letterbox_inverse_maps_known_box_exactly():
    t = plan(768, 576, 640, 640, "letterbox")  # 640x480 image, 80-pixel bars top and bottom
    assert (t.new_w, t.new_h, t.pad_x, t.pad_y) == (640, 480, 0, 80)
    net = np.array([[0, 80, 640, 560], [64, 120, 320, 400]], np.float32)
    src = to_source(net, t)
    np.testing.assert_allclose(src, [[0, 0, 768, 576], [76.8, 48, 384, 384]], atol=1e-3)


def test_letterbox_portrait_pads_left_and_right():
    t = plan(300, 600, 640, 640, "letterbox")
    assert (t.new_w, t.new_h, t.pad_x, t.pad_y) == (320, 640, 160, 0)
    src = to_source(np.array([[160, 0, 480, 640]], np.float32), t)
    np.testing.assert_allclose(src, [[0, 0, 300, 600]], atol=1e-4)


@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
def test_round_trip(mode):
    t = plan(1280, 720, 416, 320, mode)
    box = np.array([[10.5, 20.25, 600, 700], [0, 0, 1280, 720]], np.float32)
    np.testing.assert_allclose(to_source(to_network(box, t), t), box, atol=1e-2)


def test_boxes_are_clipped_to_the_image():
    t = plan(768, 576, 640, 640, "letterbox")
    src = to_source(np.array([[-50, 0, 700, 640]], np.float32), t)  # reaches into the bars
    assert src.dtype == np.float32
    np.testing.assert_allclose(src, [[0, 0, 768, 576]], atol=1e-4)


def test_nhwc_uint8_stretch_swaps_bgr_to_rgb():
    blue = np.zeros((480, 640, 3), np.uint8)
    blue[..., 0] = 255  # BGR blue
    x, (t,) = prepare([blue], InputSpec(300, 200, "stretch", "rgb", "nhwc", "uint8"))
    assert x.shape == (1, 200, 300, 3) and x.dtype == np.uint8
    assert (x[0, ..., 2] == 255).all() and (x[0, ..., :2] == 0).all()
    assert (t.scale_x, t.scale_y) == (300 / 640, 200 / 480)


def test_bgr_color_keeps_order():
    blue = np.zeros((10, 10, 3), np.uint8)
    blue[..., 0] = 255
    x, _ = prepare([blue], InputSpec(10, 10, "stretch", "bgr", "nhwc", "uint8"))
    assert (x[0, ..., 0] == 255).all()


def test_nchw_float_letterbox_pads_114_and_scales():
    img = np.full((576, 768, 3), 255, np.uint8)
    img[..., 1] = 0  # magenta in BGR: B=255, G=0, R=255
    x, (t,) = prepare([img], InputSpec(640, 640, "letterbox", "rgb", "nchw", "float32"))
    assert x.shape == (1, 3, 640, 640) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, :80], PAD_VALUE / 255, atol=1e-6)
    np.testing.assert_allclose(x[0, :, 560:], PAD_VALUE / 255, atol=1e-6)
    inside = x[0, :, 80:560]
    np.testing.assert_allclose(inside[0], 1.0)
    np.testing.assert_allclose(inside[1], 0.0)
    np.testing.assert_allclose(inside[2], 1.0)


def test_batch_of_different_sizes_is_one_tensor():
    a = np.zeros((480, 640, 3), np.uint8)
    b = np.zeros((100, 50, 3), np.uint8)
    x, ts = prepare([a, b], InputSpec(320, 320, "letterbox", "rgb", "nhwc", "uint8"))
    assert x.shape == (2, 320, 320, 3)
    assert [(t.src_w, t.src_h) for t in ts] == [(640, 480), (50, 100)]
    assert (x[1, :, :80] == PAD_VALUE).all() and (x[1, :, 80:240] == 0).all()


def test_bad_image_is_refused():
    with pytest.raises(ValueError, match="image 0"):
        prepare([np.zeros((10, 10), np.uint8)], InputSpec(10, 10))
