"""Classification of tracked vehicles: what it costs the pipeline, and how well it decides.

fps:       the default pipeline, `--fast`, over the whole video, classification on
           against off (alternating rounds, best of each); target on/off >= 0.90
decided:   the same video at its native rate, like a camera: the share of confirmed
           vehicle tracks (classify.classes) that have a decided type at their end
           (target >= 95 %), and the time from a track's first confirmed frame to its
           decision, p50 and p95 (appliance_classify_decision_seconds)
per crop:  the classifier's ms per crop in those runs (appliance_classify_seconds)

On vtest.avi (a street: pedestrians and parked cars) and bikes.mp4 (a cyclist, a car,
a motorcycle).
"""
from __future__ import annotations

import json
import sqlite3
import tempfile
import time
from pathlib import Path

from appliance import config as config_mod
from appliance.pipeline import Pipeline
from tests.bench.common import bucket_diff, bucket_quantile, frames_done, histogram_buckets, parser, setup

VIDEOS = ("vtest.avi", "bikes.mp4")


def config(video: str, classify: bool, threads) -> config_mod.Config:
    return config_mod.from_dict({"cameras": [{"id": "cam", "source": f"asset:{video}"}],
                                 "classify": {"enabled": classify}, "detect": {"threads": threads}})


def run(cfg: config_mod.Config, fast: bool) -> tuple[float, Path, tempfile.TemporaryDirectory]:
    tmp = tempfile.TemporaryDirectory()
    p = Pipeline(cfg, Path(tmp.name), fast=fast)
    t0 = time.perf_counter()
    p.start()
    p.join()
    fps = frames_done(p.status()) / (time.perf_counter() - t0)
    return fps, Path(tmp.name) / "appliance.db", tmp


def vehicle_ends(db: Path, classes) -> tuple[list[dict], dict[str, int]]:
    """End events of classified classes, and their decided types counted."""
    conn = sqlite3.connect(db)
    rows = [json.loads(r[0]) for r in conn.execute("SELECT payload FROM events WHERE type = 'end'")]
    conn.close()
    ends = [e for e in rows if e["label"] in classes]
    types: dict[str, int] = {}
    for e in ends:
        if "classification" in e:
            types[e["classification"]["label"]] = types.get(e["classification"]["label"], 0) + 1
    return ends, types


def share(ends: list[dict]) -> str:
    decided = sum("classification" in e for e in ends)
    return f"{decided}/{len(ends)} ({100 * decided / len(ends):.0f} %)" if ends else "none"


def main(argv: list[str] | None = None) -> int:
    ap = parser("scripts/bench classify", __doc__)
    args = ap.parse_args(argv)
    cfg0, _, _ = setup(args)
    threads = cfg0.detect.threads
    for video in VIDEOS:
        on, off = [], []
        for _ in range(args.rounds):
            for flag, out in ((True, on), (False, off)):
                fps, _, tmp = run(config(video, flag, threads), fast=True)
                tmp.cleanup()
                out.append(fps)
        print(f"{video}: pipeline --fast, classification on {max(on):6.1f} fps, off {max(off):6.1f} fps "
              f"-> ratio on/off {max(on) / max(off):.3f} (target >= 0.90)")

        before = {m: histogram_buckets(m) for m in ("appliance_classify_decision_seconds",
                                                     "appliance_classify_seconds")}
        cfg = config(video, True, threads)
        _, db, tmp = run(cfg, fast=False)
        ends, types = vehicle_ends(db, set(cfg.classify.classes))
        long = [e for e in ends if e["ts"] - e["first_seen"] >= 1.0]
        tmp.cleanup()
        decision = bucket_diff(histogram_buckets("appliance_classify_decision_seconds") or {},
                               before["appliance_classify_decision_seconds"])
        per_crop = bucket_diff(histogram_buckets("appliance_classify_seconds") or {},
                               before["appliance_classify_seconds"])
        print(f"{video}: at the camera's rate, vehicle tracks ended with a type: {share(ends)} "
              f"(target >= 95 %); of those seen for a second or more: {share(long)}; types {types}")
        print(f"{video}: confirmation to decision p50 {bucket_quantile(decision, 0.5):.2f} s, "
              f"p95 {bucket_quantile(decision, 0.95):.2f} s; classifier per crop p50 "
              f"{1000 * bucket_quantile(per_crop, 0.5):.1f} ms over "
              f"{int(max(per_crop.values(), default=0))} crops")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
