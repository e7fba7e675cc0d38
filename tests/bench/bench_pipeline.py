"""The default pipeline against the bare detector at its best thread count, over the same
demo-video frames, in one process; then the capture-to-commit latency at the camera's rate.

bare:      detector.detect() on frames decoded beforehand (decode excluded), once for
           every thread count from 1 to the usable cores; the best is the ceiling
auto:      the thread count `detect.threads: auto` chooses here (it measures at start)
pipeline:  `appliance run --fast` with the default config (threads auto unless --threads)
           on the same frames: decode, detect, track, events, SQLite
realtime:  the default config as `appliance run` plays it (vtest.avi at its native 10 fps,
           like a camera), --realtime-frames frames; the time from each frame's capture to
           its events being committed to SQLite, p50 and p99, read from the histogram
           appliance_capture_to_commit_seconds (interpolated inside its buckets)

The ratio pipeline/best bare shows what the rest of the pipeline and the thread choice
cost the detector (target >= 0.90).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from appliance.config import Config
from appliance.pipeline import Pipeline
from tests.bench.common import (
    Bare,
    bucket_diff,
    bucket_quantile,
    frames_done,
    histogram_buckets,
    parser,
    pipeline_threads,
    setup,
)

LATENCY_METRIC = "appliance_capture_to_commit_seconds"


def pipeline_fps(cfg: Config, n: int) -> tuple[float, int]:
    """Fast mode over the first n frames: fps through the tracker, events stored."""
    with tempfile.TemporaryDirectory() as tmp:
        p = Pipeline(cfg, Path(tmp), fast=True, max_frames=n)
        t0 = time.perf_counter()
        p.start()
        p.join()
        elapsed = time.perf_counter() - t0
        status = p.status()
        return frames_done(status) / elapsed, int(status["events_stored"])


def realtime_run(cfg: Config, n: int) -> dict:
    """n frames at the video's own rate; latency quantiles from the histogram's growth."""
    before = histogram_buckets(LATENCY_METRIC)
    with tempfile.TemporaryDirectory() as tmp:
        p = Pipeline(cfg, Path(tmp), fast=False, max_frames=n)
        t0 = time.perf_counter()
        p.start()
        p.join()
        elapsed = time.perf_counter() - t0
        status = p.status()
    after = histogram_buckets(LATENCY_METRIC)
    result = {"frames": frames_done(status), "elapsed": elapsed,
              "stored": int(status["events_stored"]), "observed": 0}
    if after is not None:
        observed = bucket_diff(after, before)
        result["observed"] = int(max(observed.values(), default=0))
        result["p50"] = bucket_quantile(observed, 0.50)
        result["p99"] = bucket_quantile(observed, 0.99)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = parser("scripts/bench pipeline", __doc__)
    ap.add_argument("--realtime-frames", type=int, default=300,
                    help="frames played at the native 10 fps for the latency (default 300; 0: skip)")
    args = ap.parse_args(argv)
    cfg, assets, frames = setup(args)
    resolved, threads_text = pipeline_threads(cfg, assets)  # auto measures here, first

    bare = Bare()
    pipe: list[float] = []
    stored = 0
    for _ in range(args.rounds):
        bare.measure(cfg, assets, frames)
        fps, stored = pipeline_fps(cfg, len(frames))
        pipe.append(fps)
    p = max(pipe)
    print(f"frames: {len(frames)} of vtest.avi, model {cfg.detect.model}, "
          f"{bare.counts[-1]} usable core(s), best of {args.rounds} round(s)")
    for line in bare.lines():
        print(line)
    print(f"detect.threads: {threads_text}")
    label = "default pipeline" if args.threads is None else "pipeline"
    print(f"{label} (--fast, {resolved} thread(s)): {p:7.1f} fps   "
          f"rounds: {', '.join(f'{x:.1f}' for x in pipe)}   events stored per run: {stored}")
    print(f"ratio pipeline/best bare ({bare.best_threads} thread(s), {bare.best:.1f} fps): "
          f"{p / bare.best:.3f}   (target >= 0.90)")
    if isinstance(resolved, int) and resolved in bare.counts:
        print(f"ratio pipeline/bare at the same {resolved} thread(s): {p / bare.fps(resolved):.3f}")

    if args.realtime_frames > 0:
        r = realtime_run(cfg, args.realtime_frames)
        print(f"realtime (vtest.avi at its native rate): {r['frames']} frames in {r['elapsed']:.1f} s "
              f"({r['frames'] / r['elapsed']:.2f} fps), events stored: {r['stored']}")
        if "p50" not in r:
            print(f"capture-to-commit latency: n/a (no histogram {LATENCY_METRIC} registered)")
        elif not r["observed"]:
            print(f"capture-to-commit latency: n/a (nothing observed in {LATENCY_METRIC})")
        else:
            print(f"capture-to-commit latency: p50 {1000 * r['p50']:.0f} ms, p99 {1000 * r['p99']:.0f} ms "
                  f"over {r['observed']} observations ({LATENCY_METRIC}, interpolated in its buckets)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
