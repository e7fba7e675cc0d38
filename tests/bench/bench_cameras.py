"""Several cameras sharing one detector, against the bare detector, in one process.

bare:       detector.detect() on one camera's frames decoded beforehand (decode excluded)
N cameras:  `appliance run --fast` with N copies of the demo video as separate cameras
            (decode, batched detection, tracking per camera, events, SQLite), N = 1, 2, 4

Every camera's frames reach the detector; aggregate fps is all cameras' frames through
the tracker per second. The ratio aggregate/bare shows what running several cameras
costs beyond the detector itself (target >= 0.90). "detector busy" is the share of the
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
from tests.bench.common import bare_fps, parser, setup


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
        per_camera = [s.frames for s in p.stats.values()]
        return sum(per_camera) / elapsed, per_camera, (_inference_s(cams) - busy0) / elapsed


def main(argv: list[str] | None = None) -> int:
    ap = parser("scripts/bench cameras", __doc__)
    args = ap.parse_args(argv)
    cfg, assets, frames = setup(args)

    counts = (1, 2, 4)
    bare: list[float] = []
    runs: dict[int, list[tuple[float, float]]] = {n: [] for n in counts}
    for _ in range(args.rounds):
        bare.append(bare_fps(cfg, assets, frames))
        for n in counts:
            fps, per_camera, busy = cameras_fps(cfg, n, len(frames) // n)
            assert per_camera == [len(frames) // n] * n, per_camera  # every frame of every camera
            runs[n].append((fps, busy))
    b = max(bare)
    print(f"{len(frames)} frames of vtest.avi per run, split over the cameras; model {cfg.detect.model}, "
          f"{cfg.detect.threads} inference thread(s), backend batch size 1 (LiteRT SSD)")
    print(f"bare detector, one camera (decode excluded): {b:7.1f} fps   "
          f"rounds: {', '.join(f'{x:.1f}' for x in bare)}")
    for n in counts:
        a, busy = max(runs[n])
        print(f"{n} camera(s), aggregate (--fast):          {a:7.1f} fps   "
              f"rounds: {', '.join(f'{x:.1f}' for x, _ in runs[n])}   ratio aggregate/bare: {a / b:.3f}   "
              f"detector busy {busy:.0%}")
    print("target: ratio >= 0.90")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
