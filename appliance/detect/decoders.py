"""Network outputs to boxes. Decoders differ only in how they read a model's output tensors.

A decoder is built once per model by make_decoder(), which checks that the outputs fit and
works out which tensor is which; the function it returns then does no checking per frame.
Decoded boxes are in network-input pixels; the detector maps them back to the frame.
"""
from __future__ import annotations

import logging
import re
from typing import Callable, Sequence

import cv2
import numpy as np

from appliance.errors import ApplianceError

log = logging.getLogger(__name__)

# xyxy (N, 4) float32 in network-input pixels, score (N,) float32, class id (N,) int32
Decoded = tuple[np.ndarray, np.ndarray, np.ndarray]
Decode = Callable[[Sequence[np.ndarray], float], list[Decoded]]
Shape = tuple[int, ...]

MAX_DETECTIONS = 300  # per frame after NMS; more than any scene the appliance watches
MAX_CANDIDATES = 30000  # before NMS, to bound its cost when a threshold is set very low


def empty() -> Decoded:
    return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32)


def _integral(x: np.ndarray) -> bool:
    return bool(np.all(x == np.round(x)))


def _name_key(name: str) -> tuple:
    # "TFLite_Detection_PostProcess:2" sorts after ":1", and ":10" after ":9"
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


# --- SSD: post-processed in the graph (TFLite_Detection_PostProcess) -------------------------

def ssd_decoder(shapes: Sequence[Shape], names: Sequence[str], net_w: int, net_h: int,
                model: str, probe: Callable[[], Sequence[np.ndarray]] | None = None) -> Decode:
    """Find boxes [B,N,4], count [B], classes and scores [B,N] by shape, not by output order.

    Exporters disagree on the order of the four outputs, so classes and scores (same shape)
    are told apart by value on one probe inference: classes are whole numbers, scores are
    fractions in [0, 1]. Only if that cannot decide does the name order (:1 classes,
    :2 scores) settle it.
    """
    boxes = [i for i, s in enumerate(shapes) if len(s) == 3 and s[2] == 4]
    counts = [i for i, s in enumerate(shapes) if len(s) == 1]
    pairs = [i for i, s in enumerate(shapes) if len(s) == 2]
    if not (len(shapes) == 4 and len(boxes) == 1 and len(counts) == 1 and len(pairs) == 2
            and all(shapes[i][1] == shapes[boxes[0]][1] for i in pairs)):
        raise ApplianceError(
            f"ssd decoder: model {model} has outputs {[tuple(s) for s in shapes]} but expects four: "
            "boxes [1, N, 4], classes [1, N], scores [1, N] and count [1] (a TFLite_Detection_"
            "PostProcess graph)"
        )
    ib, ic_count = boxes[0], counts[0]
    ic, is_ = sorted(pairs, key=lambda i: _name_key(names[i]))
    if probe is not None:
        outs = probe()
        a, b = (np.asarray(outs[i]) for i in (ic, is_))
        a_cls = _integral(a) and (a.max(initial=0) > 1 or not _integral(b))
        b_cls = _integral(b) and (b.max(initial=0) > 1 or not _integral(a))
        if b_cls and not a_cls:
            ic, is_ = is_, ic
        elif a_cls == b_cls:
            log.debug("ssd decoder: %s: classes/scores undecided by value; using name order", model)
    log.debug("ssd decoder: %s: boxes=%s classes=%s scores=%s count=%s", model,
              names[ib], names[ic], names[is_], names[ic_count])
    scale = np.array([net_h, net_w, net_h, net_w], np.float32)

    def decode(outputs: Sequence[np.ndarray], threshold: float) -> list[Decoded]:
        bx, cl, sc, ct = outputs[ib], outputs[ic], outputs[is_], outputs[ic_count]
        result = []
        for j in range(bx.shape[0]):
            n = int(ct[j])
            s = sc[j, :n].astype(np.float32, copy=False)
            keep = s >= threshold
            yxyx = bx[j, :n][keep] * scale  # ymin, xmin, ymax, xmax in network pixels
            result.append((
                np.ascontiguousarray(yxyx[:, [1, 0, 3, 2]], np.float32),
                s[keep],
                cl[j, :n][keep].astype(np.int32),
            ))
        return result

    return decode


# --- YOLO: Ultralytics-style raw heads, NMS here ----------------------------------------------

YOLO_LAYOUTS = {
    # name: (what it looks like, test on (a, b) of a [B, a, b] output)
    "channels_first": ("[1, 4+nc, N] (v8/v11)", lambda a, b, nc: a == 4 + nc),
    "channels_last": ("[1, N, 4+nc] (v8/v11 transposed)", lambda a, b, nc: b == 4 + nc),
    "objectness": ("[1, N, 5+nc] (v5, with objectness)", lambda a, b, nc: b == 5 + nc),
    "end2end": ("[1, N, 6] (x1, y1, x2, y2, score, class; NMS in the model)", lambda a, b, nc: b == 6),
}


def yolo_layout(shapes: Sequence[Shape], nc: int, requested: str, model: str) -> tuple[int, str]:
    """Which output and which layout, from shapes and the label count; ambiguity is an error."""
    fits = []
    for i, s in enumerate(shapes):
        if len(s) != 3:
            continue
        for name, (_, test) in YOLO_LAYOUTS.items():
            if (requested in ("auto", name)) and test(s[1], s[2], nc):
                fits.append((i, name))
    if not fits:
        wanted = ("one " + YOLO_LAYOUTS[requested][0] if requested != "auto"
                  else "one of " + ", ".join(d for d, _ in YOLO_LAYOUTS.values()))
        raise ApplianceError(
            f"yolo decoder: model {model} has outputs {[tuple(s) for s in shapes]} but expects "
            f"{wanted} tensor, with nc={nc} classes from its labels"
        )
    if len({i for i, _ in fits}) == 1 and len(fits) > 1:
        raise ApplianceError(
            f"yolo decoder: model {model} output {tuple(shapes[fits[0][0]])} with nc={nc} fits "
            f"layouts {', '.join(n for _, n in fits)}; set output_layout in its manifest"
        )
    if len(fits) > 1:
        log.info("yolo decoder: %s: several outputs fit; using %s", model, shapes[fits[0][0]])
    return fits[0]


def nms(xyxy: np.ndarray, score: np.ndarray, cls: np.ndarray, iou: float,
        max_det: int = MAX_DETECTIONS) -> np.ndarray:
    """Class-aware NMS; indices of the kept boxes, best first."""
    if len(score) == 0:
        return np.zeros(0, np.int64)
    xywh = xyxy.astype(np.float64)
    xywh[:, 2:] -= xywh[:, :2]
    keep = cv2.dnn.NMSBoxesBatched(xywh, score.astype(np.float32), cls.astype(np.int32), 0.0, iou)
    keep = np.asarray(keep, np.int64).reshape(-1)
    return keep[np.argsort(-score[keep], kind="stable")][:max_det]


def _cxcywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    out = np.empty_like(b, dtype=np.float32)
    half_w, half_h = b[:, 2] / 2, b[:, 3] / 2
    out[:, 0] = b[:, 0] - half_w
    out[:, 1] = b[:, 1] - half_h
    out[:, 2] = b[:, 0] + half_w
    out[:, 3] = b[:, 1] + half_h
    return out


def _top(conf: np.ndarray, keep: np.ndarray) -> np.ndarray:
    idx = np.flatnonzero(keep)
    if len(idx) > MAX_CANDIDATES:
        idx = idx[np.argpartition(-conf[idx], MAX_CANDIDATES)[:MAX_CANDIDATES]]
    return idx


def _yolo_one(p: np.ndarray, layout: str, threshold: float) -> tuple[np.ndarray, np.ndarray,
                                                                      np.ndarray] | None:
    """Candidates above threshold of one image: (xyxy, score, class), before NMS."""
    if layout == "channels_first":  # (4+nc, N): reduce over classes without transposing
        conf = p[4:].max(axis=0)
        idx = _top(conf, conf >= threshold)
        cand = p[:, idx]
        return _cxcywh_to_xyxy(cand[:4].T), conf[idx], cand[4:].argmax(axis=0)
    if layout == "channels_last":
        conf = p[:, 4:].max(axis=1)
        idx = _top(conf, conf >= threshold)
        cand = p[idx]
        return _cxcywh_to_xyxy(cand[:, :4]), conf[idx], cand[:, 4:].argmax(axis=1)
    if layout == "objectness":  # score = objectness * class probability
        idx = np.flatnonzero(p[:, 4] >= threshold)  # cheap pre-filter: score <= objectness
        cand = p[idx]
        cls_scores = cand[:, 5:] * cand[:, 4:5]
        cls = cls_scores.argmax(axis=1)
        conf = cls_scores[np.arange(len(cand)), cls]
        keep = _top(conf, conf >= threshold)
        return _cxcywh_to_xyxy(cand[keep, :4]), conf[keep], cls[keep]
    return None


def yolo_decoder(shapes: Sequence[Shape], nc: int, net_w: int, net_h: int, model: str,
                 layout: str = "auto", boxes: str = "pixels", iou: float = 0.45) -> Decode:
    out_i, layout = yolo_layout(shapes, nc, layout, model)
    log.debug("yolo decoder: %s: output %d %s as %s", model, out_i, tuple(shapes[out_i]), layout)
    scale = np.array([net_w, net_h, net_w, net_h], np.float32) if boxes == "normalized" else None

    def decode(outputs: Sequence[np.ndarray], threshold: float) -> list[Decoded]:
        out = np.asarray(outputs[out_i])
        if out.dtype != np.float32:  # fp16 exports: decode in float32
            out = out.astype(np.float32)
        result = []
        for p in out:
            if layout == "end2end":
                keep = p[:, 4] >= threshold
                cand = p[keep]
                xyxy, conf, cls = cand[:, :4].astype(np.float32), cand[:, 4], cand[:, 5]
                order = np.argsort(-conf, kind="stable")[:MAX_DETECTIONS]
            else:
                xyxy, conf, cls = _yolo_one(p, layout, threshold)  # type: ignore[misc]
                if scale is not None:
                    xyxy = xyxy * scale
                order = nms(xyxy, conf, cls, iou)
            if scale is not None and layout == "end2end":
                xyxy = xyxy * scale
            result.append((
                np.ascontiguousarray(xyxy[order], np.float32),
                conf[order].astype(np.float32),
                cls[order].astype(np.int32),
            ))
        return result

    return decode
