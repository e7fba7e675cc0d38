"""`appliance model build`: build the TensorRT engine(s) of a model ahead of time.

`appliance run` builds a missing engine at start too, but that takes minutes on a Nano;
this does it beforehand (e.g. right after installing a model or a JetPack upgrade), with
a progress bar on a terminal. Engines land in <data_dir>/engines/ (engine_cache.py).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, TextIO

from appliance.errors import ApplianceError

BAR_WIDTH = 30


def register(model_sub: Any, common: argparse.ArgumentParser) -> None:
    """Adds `build` to the `model` group (its subparsers, from modelstore/cli.py's register)."""
    b = model_sub.add_parser(
        "build", parents=[common], help="build the TensorRT engine(s) of a model now (docs/tensorrt.md)",
        description="Build the TensorRT engine of the model for this device's GPU and TensorRT, one per "
                    "input size the manifest declares, into <data dir>/engines/. An engine already "
                    "built for this setup is kept.")
    b.add_argument("--model", help="model name or model.yaml path (default: the model store's active "
                                   "version, else detect.model from the config)")
    b.add_argument("--config", help="YAML config for the detect settings (default: the built-in demo)")
    b.add_argument("--precision", choices=("fp16", "int8", "fp32"), help="default: detect.precision")
    b.add_argument("--calib", metavar="SOURCE", help="int8: a folder of images, a video file or camera:ID "
                                                     "(default: detect.calibration_source)")
    b.add_argument("--dla-core", type=int, metavar="N", help="build for DLA core N (default: detect.dla_core)")
    b.set_defaults(func=cmd_build)


def progress_bar(out: TextIO, label: str) -> Callable[[float], None]:
    """A one-line bar redrawn in place on a terminal; nothing elsewhere (the log has steps)."""
    if not out.isatty():
        return lambda fraction: None
    last = [-1]

    def show(fraction: float) -> None:
        pct = int(max(0.0, min(1.0, fraction)) * 100)
        if pct == last[0]:
            return
        last[0] = pct
        filled = pct * BAR_WIDTH // 100
        out.write(f"\r{label} [{'#' * filled}{' ' * (BAR_WIDTH - filled)}] {pct:3d} %")
        if pct == 100:
            out.write("\n")
        out.flush()

    return show


def _model_path(args: argparse.Namespace, cfg: Any, data_dir: Path) -> str:
    if args.model:
        return args.model
    try:  # the version `appliance run` would start with
        from appliance.modelstore import ModelStore

        store = ModelStore(data_dir)
        active = store.active()
        if active is not None:
            return str(store.verify(active))
    except (ImportError, ApplianceError, OSError):
        pass
    return cfg.detect.model


def cmd_build(args: argparse.Namespace) -> int:
    from appliance import config as config_mod
    from appliance import paths
    from appliance.detect import engine_build as tensorrt
    from appliance.detect import engine_cache
    from appliance.detect.manifest import input_spec_at, load_manifest, show_path

    if args.dla_core is not None and not 0 <= args.dla_core <= 7:
        raise ApplianceError(f"--dla-core: must be 0..7, got {args.dla_core}")
    why = tensorrt.unavailable()
    if why:
        raise ApplianceError(f"model build needs TensorRT and a GPU, which are not here: {why}")
    cfg = config_mod.load(args.config)
    data_dir, assets = paths.data_dir(args.data_dir), paths.assets_dir()
    d = cfg.detect
    precision = args.precision or d.precision
    calib = args.calib or d.calibration_source
    if precision == "int8" and not calib:
        raise ApplianceError("--precision int8 needs --calib (or detect.calibration_source): a folder of "
                             "images, a video file or camera:ID")
    manifest = load_manifest(_model_path(args, cfg, data_dir), assets)
    if manifest.format not in ("onnx", "engine"):
        raise ApplianceError(f"{show_path(manifest.path)}: format {manifest.format}: TensorRT builds "
                             "engines from onnx models only")
    base = engine_cache.options_from_config(cfg, data_dir, assets)
    options = replace(base, precision=precision, calibration_source=calib if precision == "int8" else None,
                      dla_core=args.dla_core if args.dla_core is not None else base.dla_core)
    specs = [manifest.input] + [input_spec_at(manifest.input, w) for w in manifest.input_sizes
                                if w != manifest.input.width]
    for spec in specs:
        label = f"{manifest.name} {spec.width}x{spec.height} {precision}"
        opts = replace(options, progress=progress_bar(sys.stderr, label))
        m = manifest if spec == manifest.input else tensorrt.manifest_at_size(manifest, spec, data_dir / "resized")
        t0 = time.monotonic()
        path, how = tensorrt.ensure_engine(m, opts)
        took = f" in {time.monotonic() - t0:.0f} s" if how == "built" else ""
        print(f"{label}: {how}{took}: {show_path(path)}")
    return 0
