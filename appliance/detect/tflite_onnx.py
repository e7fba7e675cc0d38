"""`appliance model convert`: the default detector as an ONNX file, for TensorRT.

TensorRT runs ONNX models only, and no general-purpose ONNX detector can be had from the
registries (the one YOLOv8 export there is AGPL, for tests only). So the default detector,
SSD-MobileNet v2 (Apache-2.0, an int8 TFLite), is converted:

1. tf2onnx reads the TFLite, turns its int8 weights into float32 (`--dequantize`: TensorRT
   then builds its own FP16 or INT8 engine) and its in-graph post-processing
   (TFLite_Detection_PostProcess) into ONNX NonMaxSuppression, TopK and GatherND.
2. The uint8 input becomes a float32 input scaled 0..1 (the manifest's `dtype: float32`),
   with a Mul by 255 in front of the graph's own dequantisation: a float network input is
   what every TensorRT version takes.
3. Names are made canonical: tf2onnx names its constants and some tensors differently
   from run to run, which would give the same model different bytes each time.
4. The result is checked against the TFLite on reference images (`check`): the same
   objects, classes and scores within tolerance, or the file is not written.

tf2onnx needs TensorFlow, which the appliance does not depend on (gigabytes, and of no use
at run time). The conversion runs under `--python`: an interpreter that has
`tensorflow==2.20.0` and `tf2onnx==1.17.0` (CONVERTER_REQUIREMENTS). Dockerfile.l4t does
this in a build stage of its own; docs/tensorrt.md says how to do it on a device.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from appliance.errors import ApplianceError

SOURCE_MODEL = "ssd-mobilenet-v2"
TARGET_MODEL = "ssd-mobilenet-v2-onnx"
CONVERTER_REQUIREMENTS = ("tensorflow==2.20.0", "tf2onnx==1.17.0")
OPSET = 13
# The file as CONVERTER_REQUIREMENTS make it (TensorFlow 2.20 and 2.21 alike, x86-64). Another
# sha256 is not an error (check() is the gate), but it is said: the converter changed.
REFERENCE_SHA256 = "7e1fc19ae1574e86ff5d2339543dd6c5c941596e77833423c79c2d50a6970ef3"
INPUT_SCALE = "input_scale_255"
# check(): on the reference images, every TFLite detection at or above MATCH_SCORE must
# have an ONNX one of the same class with IoU >= MATCH_IOU and a score within SCORE_TOL.
# (Seen on vtest.avi frame 100: scores differ by at most 0.05, boxes by < 0.002 of the frame.)
MATCH_SCORE, MATCH_IOU, SCORE_TOL = 0.5, 0.8, 0.1


def convert_tflite(tflite: Path, python: str) -> Any:
    """tf2onnx's conversion of a TFLite detector, as an onnx ModelProto (steps 1–3)."""
    with tempfile.TemporaryDirectory(prefix="tflite-onnx-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        cmd = [python, "-m", "tf2onnx.convert", "--tflite", str(tflite), "--output", str(raw),
               "--opset", str(OPSET), "--dequantize"]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        except FileNotFoundError:
            raise ApplianceError(f"--python {python}: no such interpreter") from None
        if p.returncode != 0 or not raw.is_file():
            tail = "\n  ".join((p.stderr or p.stdout).strip().splitlines()[-6:])
            hint = (f"\n  fix: install the converter into that interpreter: {python} -m pip install "
                    + " ".join(f"'{r}'" for r in CONVERTER_REQUIREMENTS)
                    if "No module named" in (p.stderr or "") else "")
            raise ApplianceError(f"tf2onnx could not convert {tflite} (exit {p.returncode}):\n  {tail}{hint}")
        import onnx

        model = onnx.load(str(raw))
    model.graph.doc_string = f"converted from {tflite.name}"  # tf2onnx's names the whole path
    float_input(model)
    canonical(model)
    return model


def float_input(model: Any) -> None:
    """The uint8 image input becomes float32 0..1: its Cast to float becomes a Mul by 255."""
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    inits = {i.name for i in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    if len(inputs) != 1 or inputs[0].type.tensor_type.elem_type != TensorProto.UINT8:
        raise ApplianceError(f"expected one uint8 image input, found "
                             f"{[(i.name, i.type.tensor_type.elem_type) for i in inputs]}")
    name = inputs[0].name
    users = [n for n in g.node if name in n.input]
    if len(users) != 1 or users[0].op_type != "Cast":
        raise ApplianceError(f"expected the input {name} to feed one Cast, found {[n.op_type for n in users]}")
    cast = users[0]
    mul = helper.make_node("Mul", [name, INPUT_SCALE], list(cast.output), name=cast.name)
    cast.CopyFrom(mul)
    g.initializer.append(numpy_helper.from_array(np.array(255.0, np.float32), INPUT_SCALE))
    inputs[0].type.tensor_type.elem_type = TensorProto.FLOAT


def canonical(model: Any) -> None:
    """Rename constants, inner tensors and nodes by their order in the graph, so that one
    conversion and the next give the same bytes."""
    g = model.graph
    if any(a.g.node or a.graphs for n in g.node for a in n.attribute):
        raise ApplianceError("the converted graph has subgraphs (If/Loop); canonical names do not cover them")
    keep = {v.name for v in g.input} | {v.name for v in g.output}
    inits = {i.name for i in g.initializer}
    names: dict[str, str] = {}
    for n in g.node:
        for x in n.input:
            if x in inits and x not in names:
                names[x] = f"const_{len(names)}"
    n_consts = len(names)
    for n in g.node:
        for x in n.output:
            if x not in keep and x not in names:
                names[x] = f"t{len(names) - n_consts}"
    for k, n in enumerate(g.node):
        n.name = f"n{k}"
        n.input[:] = [names.get(x, x) for x in n.input]
        n.output[:] = [names.get(x, x) for x in n.output]
    for i in g.initializer:
        i.name = names.get(i.name, i.name)
    order = {name: k for k, name in enumerate(names.values())}
    ordered = sorted(g.initializer, key=lambda i: order.get(i.name, len(order)))
    copies = [type(i)() for i in ordered]
    for c, i in zip(copies, ordered):
        c.CopyFrom(i)
    del g.initializer[:]
    g.initializer.extend(copies)
    del g.value_info[:]  # shape hints under the old names; ONNX Runtime and TensorRT infer them


@dataclass
class CheckResult:
    images: int
    compared: int  # TFLite detections at or above MATCH_SCORE
    matched: int
    worst_score_diff: float
    misses: list[str]

    @property
    def ok(self) -> bool:
        return self.compared > 0 and self.matched == self.compared


def check(onnx_manifest: str, tflite_manifest: str, assets_dir: Path,
          images: Sequence[tuple[str, np.ndarray]], backend: str = "onnxruntime") -> CheckResult:
    """Both models on the same images through the appliance's own detector (the new one on
    `backend`, the TFLite on LiteRT): does the new model find what the TFLite finds?"""
    from appliance.detect.detector import load_detector
    from appliance.track.association import iou_matrix

    kw = dict(threshold=0.3, classes=None, threads=1, backend="auto")
    ref = load_detector(tflite_manifest, assets_dir, **kw)
    new = load_detector(onnx_manifest, assets_dir, **{**kw, "backend": backend})
    compared = matched = 0
    worst = 0.0
    misses = []
    for where, image in images:
        (a,), (b,) = ref.detect([image]), new.detect([image])
        for box, score, cls in zip(a.xyxy, a.score, a.class_id):
            if score < MATCH_SCORE:
                continue
            compared += 1
            same = b.class_id == cls
            fit = np.flatnonzero(same & (iou_matrix(box[None], b.xyxy)[0] >= MATCH_IOU))
            if len(fit):
                diff = float(np.min(np.abs(b.score[fit] - score)))
                worst = max(worst, diff)
                if diff <= SCORE_TOL:
                    matched += 1
                    continue
            misses.append(f"{where}: {ref.labels[int(cls)]} {score:.2f} at {np.round(box).astype(int).tolist()}")
    return CheckResult(len(images), compared, matched, round(worst, 3), misses)


def reference_images(assets_dir: Path) -> list[tuple[str, np.ndarray]]:
    """Street frames of vtest.avi and the darknet stills: people, cars, a bicycle, a truck."""
    import cv2

    out = []
    cap = cv2.VideoCapture(str(assets_dir / "vtest.avi"))
    for i in range(301):
        ok, frame = cap.read()
        if not ok:
            break
        if i % 100 == 0:
            out.append((f"vtest.avi frame {i}", frame))
    cap.release()
    for name in ("dog.jpg", "person.jpg", "kite.jpg"):
        image = cv2.imread(str(assets_dir / name))
        if image is not None:
            out.append((name, image))
    if not out:
        raise ApplianceError(f"no reference images in {assets_dir}: run `appliance fetch` first")
    return out


def register(model_sub: Any, common: argparse.ArgumentParser) -> None:
    """Adds `convert` to the `model` group."""
    c = model_sub.add_parser(
        "convert", parents=[common], help=f"make {TARGET_MODEL}, the default detector as ONNX (for TensorRT)",
        description=f"Convert {SOURCE_MODEL}'s TFLite to the ONNX file of {TARGET_MODEL} (TensorRT runs ONNX "
                    "models only), check it against the TFLite on reference images, and write it into the "
                    "asset directory. Needs an interpreter with " + " and ".join(CONVERTER_REQUIREMENTS)
                    + " (docs/tensorrt.md).")
    c.add_argument("--python", default=sys.executable,
                   help="the interpreter that has tensorflow and tf2onnx (default: this one)")
    c.add_argument("--out", help="where to write it (default: the asset directory, where the manifest finds it)")
    c.set_defaults(func=cmd_convert)


def cmd_convert(args: argparse.Namespace) -> int:
    import onnx

    from appliance import assets, paths
    from appliance.detect.manifest import find_manifest, load_manifest, read_manifest, show_path

    assets_dir = paths.assets_dir()
    assets.fetch(assets_dir)
    source = load_manifest(SOURCE_MODEL, assets_dir).file
    target_name = read_manifest(find_manifest(TARGET_MODEL)).file
    out = Path(args.out) if args.out else assets_dir / target_name
    model = convert_tflite(source, args.python)
    onnx.checker.check_model(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    onnx.save(model, str(tmp))
    try:
        # Check exactly what will run: a copy of the manifest pointed at the new file.
        with tempfile.TemporaryDirectory(prefix="convert-check-") as check_dir:
            manifest = Path(check_dir) / "model.yaml"
            manifest.write_text(find_manifest(TARGET_MODEL).read_text().replace(target_name, str(tmp.resolve())))
            result = check(str(manifest), SOURCE_MODEL, assets_dir, reference_images(assets_dir))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    print(f"check: {result.matched}/{result.compared} TFLite detections (score >= {MATCH_SCORE}) found by the "
          f"ONNX model on {result.images} images; largest score difference {result.worst_score_diff}")
    if not result.ok:
        tmp.unlink(missing_ok=True)
        raise ApplianceError(f"the converted model does not match {SOURCE_MODEL}; not written. Missed:\n  "
                             + "\n  ".join(result.misses or ["(no detections to compare)"]))
    os.replace(tmp, out)
    digest = assets.sha256_of(out)
    same = "the reference build" if digest == REFERENCE_SHA256 else f"not the reference build {REFERENCE_SHA256}"
    print(f"{TARGET_MODEL}: {show_path(out)} sha256 {digest} ({same})")
    return 0
