"""Frames in, network tensor out; and boxes from network pixels back to frame pixels."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from appliance.detect.manifest import InputSpec

PAD_VALUE = 114  # letterbox grey, what YOLO models were trained with


@dataclass(frozen=True)
class Transform:
    """How one source image was placed in the network input: net = src * scale + pad."""

    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int
    src_w: int
    src_h: int
    new_w: int  # size of the resized image inside the input
    new_h: int


def plan(src_w: int, src_h: int, net_w: int, net_h: int, resize: str) -> Transform:
    if resize == "stretch":
        return Transform(net_w / src_w, net_h / src_h, 0, 0, src_w, src_h, net_w, net_h)
    r = min(net_w / src_w, net_h / src_h)
    new_w = min(net_w, max(1, round(src_w * r)))
    new_h = min(net_h, max(1, round(src_h * r)))
    # Scales from the rounded size, so the inverse maps the image corners back exactly.
    return Transform(
        new_w / src_w, new_h / src_h, (net_w - new_w) // 2, (net_h - new_h) // 2,
        src_w, src_h, new_w, new_h,
    )


def to_source(xyxy: np.ndarray, t: Transform) -> np.ndarray:
    """Boxes (N, 4) in network-input pixels to source pixels, clipped to the image, float32."""
    out = np.empty((len(xyxy), 4), np.float32)
    out[:, 0::2] = (xyxy[:, 0::2] - t.pad_x) / t.scale_x
    out[:, 1::2] = (xyxy[:, 1::2] - t.pad_y) / t.scale_y
    np.clip(out[:, 0::2], 0, t.src_w, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, t.src_h, out=out[:, 1::2])
    return out


def to_network(xyxy: np.ndarray, t: Transform) -> np.ndarray:
    """The forward mapping (source to network pixels); tests and debugging use it."""
    out = np.empty((len(xyxy), 4), np.float32)
    out[:, 0::2] = xyxy[:, 0::2] * t.scale_x + t.pad_x
    out[:, 1::2] = xyxy[:, 1::2] * t.scale_y + t.pad_y
    return out


def input_shape(spec: InputSpec, batch: int) -> tuple[int, int, int, int]:
    if spec.layout == "nhwc":
        return (batch, spec.height, spec.width, 3)
    return (batch, 3, spec.height, spec.width)


def new_buffer(spec: InputSpec, batch: int) -> np.ndarray:
    return np.empty(input_shape(spec, batch), np.uint8 if spec.dtype == "uint8" else np.float32)


def check_image(image: object, i: int) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
            or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        what = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image {i}: expected a BGR uint8 HxWx3 array, got {what}")
    return image


def fill(images: Sequence[np.ndarray], spec: InputSpec, out: np.ndarray) -> list[Transform]:
    """Write len(images) frames into out[:len(images)] (from new_buffer); return their transforms.

    One resize per frame; colour swap, layout change and scaling happen in the single copy
    into the buffer, so a frame is touched twice at most.
    """
    transforms = []
    for b, image in enumerate(images):
        image = check_image(image, b)
        h, w = image.shape[:2]
        t = plan(w, h, spec.width, spec.height, spec.resize)
        if (w, h) == (t.new_w, t.new_h):
            resized = image
        else:
            # INTER_LINEAR is what both model families were trained with and is the fast path.
            resized = cv2.resize(image, (t.new_w, t.new_h), interpolation=cv2.INTER_LINEAR)
        src = resized[..., ::-1] if spec.color == "rgb" else resized  # a view, no copy
        if spec.layout == "nchw":
            src = src.transpose(2, 0, 1)
            dst = out[b]
            region = dst[:, t.pad_y:t.pad_y + t.new_h, t.pad_x:t.pad_x + t.new_w]
        else:
            dst = out[b]
            region = dst[t.pad_y:t.pad_y + t.new_h, t.pad_x:t.pad_x + t.new_w]
        if t.pad_x or t.pad_y:
            pad = PAD_VALUE if out.dtype == np.uint8 else PAD_VALUE / 255.0
            _fill_border(dst, t, spec.layout, pad)
        if out.dtype == np.uint8:
            region[...] = src
        else:
            np.multiply(src, np.float32(1 / 255.0), out=region, casting="unsafe")
        transforms.append(t)
    return transforms


def _fill_border(dst: np.ndarray, t: Transform, layout: str, pad: float) -> None:
    """Paint only the letterbox bars, not the whole buffer."""
    y0, y1, x0, x1 = t.pad_y, t.pad_y + t.new_h, t.pad_x, t.pad_x + t.new_w
    if layout == "nchw":
        dst[:, :y0] = pad
        dst[:, y1:] = pad
        dst[:, y0:y1, :x0] = pad
        dst[:, y0:y1, x1:] = pad
    else:
        dst[:y0] = pad
        dst[y1:] = pad
        dst[y0:y1, :x0] = pad
        dst[y0:y1, x1:] = pad


def prepare(images: Sequence[np.ndarray], spec: InputSpec) -> tuple[np.ndarray, list[Transform]]:
    """A fresh [B, ...] input tensor for the frames, and each frame's transform."""
    out = new_buffer(spec, len(images))
    return out, fill(images, spec, out)
