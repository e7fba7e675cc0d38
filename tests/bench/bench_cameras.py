"""Several cameras sharing one detector, against the bare detector, in one process.

bare:       detector.detect() on one camera's frames decoded beforehand (decode excluded),
            at every thread count from 1 to the usable cores; the best is the ceiling
N cameras:  `appliance run --fast` with N copies of the demo video as separate cameras
            (decode, batched detection, tracking per camera, events, SQLite), N = 1, 2, 4

Every camera's frames reach the detector; aggregate fps is all cameras' frames through
the tracker per second. The ratio aggregate/bare shows what running several cameras
costs beyond the detector at its best thread count (target >= 0.90); the cameras run
the default config's detect.threads (auto unless --threads). "detector busy" is the share of the
run the detector spent inferring: near 100 % means the rest of the pipeline kept it fed,
and what is left of the gap is inference itself running slower beside the other threads.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from prometheus_client import REGISTRY

from appliance.config import CameraConfig, Config
from appliance.pipeline import Pipeline
from tests.bench.common import Bare, parser, pipeline_threads, setup


def _inference_s(cameras: list[str]) -> float:
    return sum(REGISTRY.get_sample_value("appliance_inference_seconds_sum", {"camera": c}) or 0.0
               for c in cameras)


def cameras_fps(cfg: Config, n: int, frames_per_camera: int) -> tuple[float, list[int], float]:
    """Aggregate fps, frames per camera, and the share of the run the detector was busy."""
    cfg.cameras = [CameraConfig(id=f"cam{i}", source="asset:vtest.avi") for i in range(n)]
    cams = [c.id for c in cfg.cameras]
    with tempfile.TemporaryDirectory() as tmp:
        p = Pipeline(cfg, Path(tmp), fast=True, max_frames=frames_per_camera)
        busy0 = _inference_s(cams)
        t0 = time.perf_counter()
        p.start()
        p.join()
        elapsed = time.perf_counter() - t0
        cams_status = p.status()["cameras"]
        per_camera = [int(cams_status[c]["frames"]) for c in cams]
        return sum(per_camera) / elapsed, per_camera, (_inference_s(cams) - busy0) / elapsed


def main(argv: list[str] | None = None) -> int:
    ap = parser("scripts/bench cameras", __doc__)
    args = ap.parse_args(argv)
    cfg, assets, frames = setup(args)
    _, threads_text = pipeline_threads(cfg, assets)  # auto measures here, first

    counts = (1, 2, 4)
    bare = Bare()
    runs: dict[int, list[tuple[float, float]]] = {n: [] for n in counts}
    for _ in range(args.rounds):
        bare.measure(cfg, assets, frames)
        for n in counts:
            fps, per_camera, busy = cameras_fps(cfg, n, len(frames) // n)
            assert per_camera == [len(frames) // n] * n, per_camera  # every frame of every camera
            runs[n].append((fps, busy))
    b = bare.best
    print(f"{len(frames)} frames of vtest.avi per run, split over the cameras; model {cfg.detect.model}, "
          f"backend batch size 1 (LiteRT SSD), {bare.counts[-1]} usable core(s)")
    for line in bare.lines("bare detector, one camera (decode excluded)"):
        print(line)
    print(f"cameras' detect.threads: {threads_text}")
    for n in counts:
        a, busy = max(runs[n])
        print(f"{n} camera(s), aggregate (--fast):          {a:7.1f} fps   "
              f"rounds: {', '.join(f'{x:.1f}' for x, _ in runs[n])}   ratio aggregate/best bare: {a / b:.3f}   "
              f"detector busy {busy:.0%}")
    print(f"target: ratio aggregate/best bare ({bare.best_threads} thread(s), {b:.1f} fps) >= 0.90")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
