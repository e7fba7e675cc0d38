"""Pipeline against the bare detector, over the same demo-video frames, in one process.

bare:      detector.detect() on frames decoded beforehand (decode excluded)
pipeline:  `appliance run --fast` on the same frames: decode, detect, track, events, SQLite

The ratio pipeline/bare shows what the rest of the pipeline costs the detector. With
decode overlapped on the other core it should stay close to 1 (target >= 0.90).
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import threading
import time
from pathlib import Path

import cv2

from appliance import paths
from appliance.assets import fetch
from appliance.config import Config
from appliance.detect import load_detector
from appliance.pipeline import Pipeline


def bare_fps(cfg: Config, assets: Path, frames: list) -> float:
    d = cfg.detect
    det = load_detector(d.model, assets, backend=d.backend, threshold=d.threshold,
                        classes=d.classes or None, threads=d.threads)
    det.detect([frames[0]])  # warm-up
    t0 = time.perf_counter()
    for f in frames:
        det.detect([f])
    return len(frames) / (time.perf_counter() - t0)


def pipeline_fps(cfg: Config, n: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        p = Pipeline(cfg, Path(tmp), fast=True, max_frames=n)
        done = threading.Event()
        t0 = time.perf_counter()
        p.start()
        threading.Thread(target=lambda: (p.join(), done.set()), daemon=True).start()
        done.wait()
        elapsed = time.perf_counter() - t0
        frames = sum(s.frames for s in p.stats.values())
        return frames / elapsed, p.writer.stored


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=400, help="frames of vtest.avi (default 400)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds; best of each kept")
    ap.add_argument("--threads", type=int, help="inference threads (default: the config's)")
    args = ap.parse_args(argv)
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

    bare, pipe, stored = [], [], 0
    for _ in range(args.rounds):
        bare.append(bare_fps(cfg, assets, frames))
        fps, stored = pipeline_fps(cfg, len(frames))
        pipe.append(fps)
    b, p = max(bare), max(pipe)
    print(f"frames: {len(frames)} of vtest.avi, model {cfg.detect.model}, {cfg.detect.threads} inference thread(s)")
    print(f"bare detector (decode excluded): {b:7.1f} fps   rounds: {', '.join(f'{x:.1f}' for x in bare)}")
    print(f"full pipeline (--fast):          {p:7.1f} fps   rounds: {', '.join(f'{x:.1f}' for x in pipe)}"
          f"   events stored per run: {stored}")
    print(f"ratio pipeline/bare: {p / b:.3f}   (target >= 0.90)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
