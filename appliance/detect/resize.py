"""Rewrite a static Ultralytics YOLO ONNX export (v8/v11 detect head) for another input size.

Ultralytics exports with `dynamic=False` bake the input size into the graph: the input is
[1, 3, 640, 640], the head's anchor points and per-anchor strides are constants of 8400
entries (80x80 + 40x40 + 20x20 cells at strides 8, 16, 32), and the head's Reshape shapes
name 8400 too. Making the input dims symbolic therefore fails at /model.22/dfl/Reshape.
Everything else (convolutions, Resize by scale factors, channel Splits and Concats) does
not depend on the size, so a rewrite only has to regenerate those constants:

- the anchor points: the centre (x + 0.5, y + 0.5) of every cell of every level, in grid
  units, levels in stride order, rows first;
- the strides: each anchor's level stride;
- Reshape shapes: the anchor count;
- the declared input and output shapes (then ONNX shape inference redoes the rest) and the
  `imgsz` metadata.

The converter recognises the constants by their values, not their names: a constant that
depends on the anchor count but is neither (or whose values are not what the original size
gives) is refused with an error naming it, so a graph it does not understand is never
half-converted. Sizes must be multiples of the largest stride (32).

    python -m appliance.detect.resize IN.onnx OUT.onnx --size 480 [--height 320]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from appliance.assets import sha256_of
from appliance.errors import ApplianceError

_STRIDES = (8, 16, 32, 64, 128)  # level strides a YOLO head may use
_INT_TYPES = (6, 7)  # onnx.TensorProto INT32, INT64


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ApplianceError("resizing an ONNX model needs the onnx package: pip install onnx") from None
    return onnx


@dataclass(frozen=True)
class Head:
    """What a static export says about its input size."""

    width: int
    height: int
    strides: tuple[int, ...]

    def anchors(self, width: int | None = None, height: int | None = None) -> int:
        w, h = width or self.width, height or self.height
        return sum((w // s) * (h // s) for s in self.strides)


def anchor_points(width: int, height: int, strides: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(2, N) cell centres in grid units (x row, y row) and (N,) the stride of each."""
    points, each = [], []
    for s in strides:
        w, h = width // s, height // s
        ys, xs = np.meshgrid(np.arange(h, dtype=np.float64) + 0.5,
                             np.arange(w, dtype=np.float64) + 0.5, indexing="ij")
        points.append(np.stack([xs.ravel(), ys.ravel()]))
        each.append(np.full(w * h, s, np.float64))
    return np.concatenate(points, axis=1), np.concatenate(each)


class _Tensors:
    """Every constant of the graph (initializers and Constant nodes) by name, replaceable."""

    def __init__(self, graph, onnx):
        self._onnx = onnx
        self.protos = {t.name: t for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant":
                for a in node.attribute:
                    if a.name == "value":
                        self.protos[node.output[0]] = a.t

    def array(self, name: str) -> np.ndarray:
        return self._onnx.numpy_helper.to_array(self.protos[name])

    def set(self, name: str, value: np.ndarray) -> None:
        proto = self.protos[name]
        old = self.array(name)
        new = self._onnx.numpy_helper.from_array(value.astype(old.dtype), name)
        proto.CopyFrom(new)


def _static_input(model, where: str) -> tuple[str, int, int]:
    init = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init]
    if len(inputs) != 1:
        raise ApplianceError(f"{where}: has {len(inputs)} inputs; a YOLO export has one image input")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    if len(shape) != 4 or shape[1] != 3:
        raise ApplianceError(f"{where}: input {inputs[0].name} has shape {shape}; expected [1, 3, H, W]")
    if -1 in shape[2:]:
        raise ApplianceError(f"{where}: input {inputs[0].name} is already dynamic ({shape}); "
                             "it runs at any size without conversion")
    return inputs[0].name, shape[3], shape[2]


def _find_head(model, tensors: _Tensors, width: int, height: int, where: str) -> tuple[Head, str, list[str]]:
    """The head's levels, from its stride constant; returns (head, strides name, anchor names)."""
    # Heads use consecutive strides (P3-P5, or P3-P6): only constants of such an anchor count
    # are looked at, so the weights are never scanned.
    heads = {h.anchors(): h for h in (Head(width, height, _STRIDES[i:j]) for i in range(len(_STRIDES))
                                      for j in range(i + 2, len(_STRIDES) + 1))}
    for name, proto in tensors.protos.items():
        head = heads.get(int(np.prod(proto.dims or [1])))
        if head is None or proto.data_type in _INT_TYPES:
            continue
        if np.array_equal(tensors.array(name).ravel(), anchor_points(width, height, head.strides)[1]):
            break
    else:
        raise ApplianceError(f"{where}: no per-anchor stride constant found; not a static YOLOv8-style "
                             "detect head this converter knows")
    points = anchor_points(width, height, head.strides)[0]
    anchors = [n for n, p in tensors.protos.items()
               if p.data_type not in _INT_TYPES and n != name and int(np.prod(p.dims or [1])) == points.size
               and np.allclose(tensors.array(n).reshape(2, -1), points)]
    if not anchors:
        raise ApplianceError(f"{where}: no anchor point constant found for strides {head.strides}")
    return head, name, anchors


def _shapes(model, onnx) -> dict[str, list[int]]:
    """Every tensor's static shape at the export's own size (-1 where not known)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a graph shape inference cannot read: only the declared shapes
        inferred = model
    g = inferred.graph
    return {v.name: [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
            for v in (*g.input, *g.value_info, *g.output)}


def resize_model(model, width: int, height: int, where: str = "model"):
    """A copy of a static YOLO export (an onnx.ModelProto) rewritten for input width x height."""
    onnx = _onnx()
    model = onnx.ModelProto.FromString(model.SerializeToString())
    in_name, w0, h0 = _static_input(model, where)
    tensors = _Tensors(model.graph, onnx)
    head, strides_name, anchor_names = _find_head(model, tensors, w0, h0, where)
    step = max(head.strides)
    for what, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, int) or v < step or v % step:
            raise ApplianceError(f"{where}: {what} {v!r} must be a positive multiple of {step} "
                                 "(the model's largest stride)")
    n0, n1 = head.anchors(), head.anchors(width, height)
    points, each = anchor_points(width, height, head.strides)

    for name in anchor_names:
        tensors.set(name, points.reshape((*tensors.array(name).shape[:-1], -1)))
    tensors.set(strides_name, each.reshape((*tensors.array(strides_name).shape[:-1], -1)))

    # Reshape shapes: the anchor count is the one size-dependent entry we can rewrite; a
    # feature map reshaped to its own height or width would mean a head layout this converter
    # does not know. Which is which follows from the shape the Reshape takes (at the old size).
    shapes = _shapes(model, onnx)
    shape_inputs = {}
    for n in model.graph.node:
        if n.op_type == "Reshape" and len(n.input) > 1:
            shape_inputs.setdefault(n.input[1], []).append(shapes.get(n.input[0], []))
    for node in model.graph.node:
        if node.op_type == "Resize" and len(node.input) > 3 and node.input[3]:
            raise ApplianceError(f"{where}: node {node.name} resizes to fixed sizes; only scale factors "
                                 "can be converted")
    done = {strides_name, *anchor_names}
    for name, proto in tensors.protos.items():
        if name in done:
            continue
        a = tensors.array(name)
        if name in shape_inputs and proto.data_type in _INT_TYPES:
            maps = {(h0 // s, w0 // s) for s in head.strides}  # a level's feature map: [B, C, h, w]
            grid = {d for shape in shape_inputs[name] if len(shape) == 4 and tuple(shape[2:]) in maps
                    for d in shape[2:]}
            bad = [int(v) for v in a.ravel() if int(v) in grid]
            if bad:
                raise ApplianceError(f"{where}: Reshape shape {name} {a.tolist()} has grid sizes {bad}; "
                                     "this converter only rewrites the anchor count")
            tensors.set(name, np.where(a == n0, n1, a))
        elif n0 in a.shape or (proto.data_type in _INT_TYPES and a.size < 16 and n0 in a.ravel()):
            raise ApplianceError(f"{where}: constant {name} {list(a.shape)} depends on the input size "
                                 "and is not one this converter knows how to regenerate")

    inp = next(i for i in model.graph.input if i.name == in_name)
    inp.type.tensor_type.shape.dim[2].dim_value = height
    inp.type.tensor_type.shape.dim[3].dim_value = width
    for out in model.graph.output:
        for d in out.type.tensor_type.shape.dim:
            if d.HasField("dim_value") and d.dim_value == n0:
                d.dim_value = n1
    del model.graph.value_info[:]  # stale shapes; inference redoes them
    for p in model.metadata_props:
        if p.key == "imgsz":
            p.value = f"[{height}, {width}]"
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        onnx.checker.check_model(model)
    except Exception as e:  # onnx raises its own InferenceError / ValidationError
        raise ApplianceError(f"{where}: the model resized to {width}x{height} does not check: {e}") from None
    return model


def resized_file(src: Path, width: int, height: int, cache_dir: Path) -> Path:
    """`src` converted for width x height, made once and kept in cache_dir (keyed by the
    source's sha256, so new weights under the same name are converted again)."""
    src = Path(src)
    out = Path(cache_dir) / f"{src.stem}-{width}x{height}-{sha256_of(src)[:16]}.onnx"
    if out.is_file():
        return out
    onnx = _onnx()
    where = str(src)
    try:
        model = onnx.load(str(src))
    except Exception as e:
        raise ApplianceError(f"{where}: not a readable ONNX model ({e})") from None
    model = resize_model(model, width, height, where)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written beside, then renamed: a crash never leaves half a model under the final name.
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model.SerializeToString())
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m appliance.detect.resize", description=__doc__.split("\n")[0])
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--size", type=int, required=True, help="input width (and height unless --height)")
    p.add_argument("--height", type=int, default=None)
    args = p.parse_args(argv)
    onnx = _onnx()
    try:
        model = resize_model(onnx.load(str(args.src)), args.size, args.height or args.size, str(args.src))
    except ApplianceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    onnx.save(model, str(args.dst))
    return 0


if __name__ == "__main__":
    sys.exit(main())
