"""Pipeline against the bare detector, over the same demo-video frames, in one process.

bare:      detector.detect() on frames decoded beforehand (decode excluded)
pipeline:  `appliance run --fast` on the same frames: decode, detect, track, events, SQLite

The ratio pipeline/bare shows what the rest of the pipeline costs the detector. With
decode overlapped on the other core it should stay close to 1 (target >= 0.90).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path


from appliance.config import Config
from appliance.pipeline import Pipeline
from tests.bench.common import bare_fps, parser, setup


def pipeline_fps(cfg: Config, n: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        p = Pipeline(cfg, Path(tmp), fast=True, max_frames=n)
        t0 = time.perf_counter()
        p.start()
        p.join()
        elapsed = time.perf_counter() - t0
        frames = sum(s.frames for s in p.stats.values())
        return frames / elapsed, p.writer.stored


def main(argv: list[str] | None = None) -> int:
    ap = parser("scripts/bench pipeline", __doc__)
    args = ap.parse_args(argv)
    cfg, assets, frames = setup(args)

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
