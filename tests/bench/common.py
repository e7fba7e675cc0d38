"""What the detector benchmarks share: their options, the config, the demo frames, bare fps."""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import cv2

from appliance import paths
from appliance.assets import fetch
from appliance.config import Config
from appliance.detect import load_detector


def parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=400, help="frames of vtest.avi per run (default 400)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds; best of each kept")
    ap.add_argument("--threads", type=int, help="inference threads (default: the config's)")
    return ap


def setup(args: argparse.Namespace) -> tuple[Config, Path, list]:
    """The demo config, the asset dir and the first --frames frames of vtest.avi, decoded."""
    logging.basicConfig(level=logging.WARNING)
    assets = paths.assets_dir(paths.data_dir())
    fetch(assets)
    cfg = Config()
    if args.threads:
        cfg.detect.threads = args.threads
    cap = cv2.VideoCapture(str(assets / "vtest.avi"))
    frames = []
    while len(frames) < args.frames:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    return cfg, assets, frames


def bare_fps(cfg: Config, assets: Path, frames: list) -> float:
    """The detector alone on frames decoded beforehand: the ceiling for any pipeline."""
    d = cfg.detect
    det = load_detector(d.model, assets, backend=d.backend, threshold=d.threshold,
                        classes=d.classes or None, threads=d.threads)
    det.detect([frames[0]])  # warm-up
    t0 = time.perf_counter()
    for f in frames:
        det.detect([f])
    return len(frames) / (time.perf_counter() - t0)
