"""Count accuracy of lines and zones against ground truth, on MOT15 TUD-Campus and
TUD-Stadtmitte (public detections, motmetrics' gt.txt), in one run.

    scripts/bench counts [--det-dir DIR] [--fps 25]

truth:    the ground-truth tracks' bottom-centre points; a crossing is a move between two
          consecutive annotated frames across the line within its extent, at most once per
          track and direction. A zone visit is a run of frames with the point inside.
ours:     `appliance analyze` (appliance/analytics/mot.py): the tracker with the default
          `track` settings and the analytics processor, on the public detections.
naive:    the same tracker's raw output, counting every side change of every track
          (what counting without hysteresis or once-per-direction gives).
on truth: the analytics processor fed the ground-truth boxes as its tracks: what the
          counting itself gets wrong, with a tracker that makes no mistakes (so without
          continuing broken tracks, the repair of a tracker's mistakes).
+stitch:  the same with broken tracks continued, as the product runs: where the
          annotation itself gives one walker two ids across an occlusion, the way
          between them counts (the truth above does not count it).
best:     the ceiling these detections allow: each detection given the id of the
          ground-truth box it overlaps (IoU >= 0.5, one to one), then counted as the
          product does. Perfect association; what it still gets wrong is people the
          detections miss or merge with another walker near a line.

Per line: |in - truth in| + |out - truth out|, as a share of the truth's crossings; the
total is the sum of the errors over the sum of the crossings. Zones: enter counts and
mean dwell against the truth. Target: total line error <= 5 %.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from appliance import config
from appliance.analytics import geometry
from appliance.analytics.mot import LABELS, analyze, track_frames
from appliance.analytics.processor import CameraAnalytics
from appliance.capture.frame import Frame
from appliance.detect.types import Detections
from appliance.result import FrameResult
from appliance.track.association import iou_matrix
from appliance.track.mot import read_detections
from appliance.track.sort import Track
from tests.bench.bench_tracker import mot15_det_dir

SIZE = (640, 480)  # both TUD sequences
# Lines across the walking directions (people walk left and right in both scenes), and a
# zone in the middle of each; pixels.
SCENES = {
    "TUD-Campus": {
        "lines": {"x200": [[200, 0], [200, 480]], "x320": [[320, 0], [320, 480]], "x450": [[450, 0], [450, 480]]},
        "zones": {"middle": [[240, 250], [420, 250], [420, 480], [240, 480]]},
    },
    "TUD-Stadtmitte": {
        "lines": {"x250": [[250, 0], [250, 480]], "x400": [[400, 0], [400, 480]], "x550": [[550, 0], [550, 480]]},
        "zones": {"middle": [[300, 180], [500, 180], [500, 360], [300, 360]]},
    },
}


def gt_dir() -> Path:
    if not hasattr(np, "asfarray"):  # motmetrics 1.4.0 still calls it; numpy 2 removed it
        np.asfarray = lambda a, dtype=float: np.asarray(a, dtype=dtype)
    import motmetrics as mm

    return Path(mm.__file__).parent / "data"


def _gt_tracks(seq: str) -> dict[int, np.ndarray]:
    """id -> rows (frame, x, y) of the bottom-centre point, in frame order."""
    g = np.loadtxt(gt_dir() / seq / "gt.txt", delimiter=",", ndmin=2)
    out = {}
    for tid in np.unique(g[:, 1]):
        r = g[g[:, 1] == tid]
        r = r[np.argsort(r[:, 0])]
        out[int(tid)] = np.stack([r[:, 0], r[:, 2] + r[:, 4] / 2, r[:, 3] + r[:, 5]], 1)
    return out


def truth_lines(tracks: dict[int, np.ndarray], lines: dict) -> dict[str, dict[str, int]]:
    out = {}
    for name, pts in lines.items():
        px = np.asarray(pts, float)
        n = {"in": 0, "out": 0}
        for rows in tracks.values():
            seen = set()
            for a, b in zip(rows[:-1], rows[1:]):
                c = geometry.cross_polyline(px, (a[1], a[2]), (b[1], b[2]))
                d = "in" if c > 0 else "out" if c < 0 else None
                if d and d not in seen:
                    seen.add(d)
                    n[d] += 1
        out[name] = n
    return out


def truth_zones(tracks: dict[int, np.ndarray], zones: dict, fps: float) -> dict[str, dict]:
    out = {}
    for name, pts in zones.items():
        poly = np.asarray(pts, np.float32).reshape(-1, 1, 2)
        entered, dwell = 0, []
        for rows in tracks.values():
            inside = [cv2.pointPolygonTest(poly, (float(x), float(y)), False) >= 0 for _, x, y in rows]
            start = None
            for i, ins in enumerate([*inside, False]):
                if ins and start is None:
                    start = i
                elif not ins and start is not None:
                    entered += 1
                    dwell.append((rows[i - 1, 0] - rows[start, 0]) / fps)
                    start = None
        out[name] = {"entered": entered, "mean_dwell_s": float(np.mean(dwell)) if dwell else None}
    return out


def naive_lines(det: Path, cfg, fps: float, lines: dict) -> dict[str, dict[str, int]]:
    """Every side change of every raw track, both ways, as often as it happens."""
    n = {name: {"in": 0, "out": 0} for name in lines}
    px = {name: np.asarray(p, float) for name, p in lines.items()}
    last: dict[int, tuple[float, float]] = {}
    for _, _, out in track_frames(det, cfg.track, fps):
        for t in out.tracks:
            p = geometry.anchor_point(t.xyxy)
            if t.id in last:
                for name, pts in px.items():
                    c = geometry.cross_polyline(pts, last[t.id], p)
                    if c:
                        n[name]["in" if c > 0 else "out"] += abs(c)
            last[t.id] = p
    return n


def _gt(seq: str) -> np.ndarray:
    return np.loadtxt(gt_dir() / seq / "gt.txt", delimiter=",", ndmin=2)


def on_truth(seq: str, cfg, fps: float, continue_tracks: bool = False, g: np.ndarray | None = None) -> dict:
    """counts() of the analytics processor fed the ground-truth boxes as tracks (or the
    rows `g`, MOT format: frame, id, x, y, w, h)."""
    truth = _gt(seq)
    g = truth if g is None else g
    proc = CameraAnalytics("bench", "mot", LABELS, cfg.cameras[0], continue_tracks=continue_tracks)
    image = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (SIZE[1], SIZE[0], 3))
    last_frame = {int(tid): int(g[g[:, 1] == tid, 0].max()) for tid in np.unique(g[:, 1])}
    frames = int(truth[:, 0].max())  # the sequence's length, whatever rows `g` has
    f = None
    for n in range(1, frames + 2):
        rows = g[g[:, 0] == n]
        live = [Track(int(r[1]), np.array([r[2], r[3], r[2] + r[4], r[3] + r[5]]), 1.0, 0, 3, 3, 3, 0, True)
                for r in rows]
        gone = [Track(tid, np.zeros(4), 1.0, 0, 3, 3, 3, 1, True) for tid, last in last_frame.items()
                if last == n - 1]
        if n <= frames:
            f = Frame(image, "mot", n, (n - 1) / fps, (n - 1) / fps)
        proc.process(FrameResult(f, Detections.empty(), tracks=live, ended=gone, final=n > frames))
    return proc.counts()


def detections_with_truth_ids(seq: str, det: Path) -> np.ndarray:
    """The detections (any score) that overlap a ground-truth box by IoU >= 0.5, one to
    one per frame, each with that box's id: rows frame, id, x, y, w, h."""
    g = _gt(seq)
    dets = read_detections(det)
    rows = []
    for f in np.unique(g[:, 0]).astype(int):
        d = dets.get(f)
        if d is None:
            continue
        r = g[g[:, 0] == f]
        iou = iou_matrix(np.c_[r[:, 2:4], r[:, 2:4] + r[:, 4:6]], d[:, :4])
        for a, c in zip(*linear_sum_assignment(iou, maximize=True)):
            if iou[a, c] >= 0.5:
                rows.append((f, r[a, 1], d[c, 0], d[c, 1], d[c, 2] - d[c, 0], d[c, 3] - d[c, 1]))
    return np.array(rows, dtype=float).reshape(-1, 6)


def _config(scene: dict):
    return config.from_dict({"cameras": [{
        "id": "mot", "source": "mot.txt", "width": SIZE[0], "height": SIZE[1],
        "lines": [{"name": k, "points": v} for k, v in scene["lines"].items()],
        "zones": [{"name": k, "points": v} for k, v in scene["zones"].items()]}]}, "bench")


def _err(got: dict, want: dict) -> int:
    return abs(got["in"] - want["in"]) + abs(got["out"] - want["out"])


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench counts", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--det-dir", type=Path, default=None, help="MOT15 detections (default: ../shared/data/mot15-det)")
    ap.add_argument("--fps", type=float, default=25.0)
    args = ap.parse_args(argv)
    det_dir = args.det_dir or mot15_det_dir()
    tot = {"truth": 0, "ours": 0, "naive": 0, "on_truth": 0, "stitched": 0, "best": 0}
    print(f"{'scene':<15} {'line':<6} {'truth in/out':>12} {'ours in/out':>12} {'error':>7} "
          f"{'naive in/out':>13} {'error':>7} {'on truth':>9} {'error':>7} {'+stitch':>9} {'error':>7} "
          f"{'best':>9} {'error':>7}")
    zone_rows = []
    for seq, scene in SCENES.items():
        det = det_dir / f"{seq}.txt"
        if not det.is_file():
            print(f"{det} not found (set --det-dir)", file=sys.stderr)
            return 2
        cfg = _config(scene)
        gt = _gt_tracks(seq)
        truth = truth_lines(gt, scene["lines"])
        ours = analyze(det, cfg, args.fps, SIZE)
        naive = naive_lines(det, cfg, args.fps, scene["lines"])
        oracle = on_truth(seq, cfg, args.fps)
        stitched = on_truth(seq, cfg, args.fps, continue_tracks=True)
        best = on_truth(seq, cfg, args.fps, g=detections_with_truth_ids(seq, det))
        for name in scene["lines"]:
            t, o, n, g = truth[name], ours["lines"][name], naive[name], oracle["lines"][name]
            st, b = stitched["lines"][name], best["lines"][name]
            crossings = t["in"] + t["out"]
            tot["truth"] += crossings
            tot["ours"] += _err(o, t)
            tot["naive"] += _err(n, t)
            tot["on_truth"] += _err(g, t)
            tot["stitched"] += _err(st, t)
            tot["best"] += _err(b, t)
            share = crossings or 1
            print(f"{seq:<15} {name:<6} {t['in']:>5}/{t['out']:<6} {o['in']:>5}/{o['out']:<6} "
                  f"{_err(o, t) / share:>7.1%} {n['in']:>6}/{n['out']:<6} {_err(n, t) / share:>7.1%} "
                  f"{g['in']:>4}/{g['out']:<4} {_err(g, t) / share:>7.1%} "
                  f"{st['in']:>4}/{st['out']:<4} {_err(st, t) / share:>7.1%} "
                  f"{b['in']:>4}/{b['out']:<4} {_err(b, t) / share:>7.1%}")
        tz = truth_zones(gt, scene["zones"], args.fps)
        for name in scene["zones"]:
            zone_rows.append((seq, name, tz[name], ours["zones"][name], oracle["zones"][name]))
        print(f"{seq:<15} tracks: ours {ours['tracks']}, truth {len(gt)}")
    n = tot["truth"]
    print(f"TOTAL line crossings {n}: ours error {tot['ours']} = {tot['ours'] / n:.1%} (target <= 5 %), "
          f"naive error {tot['naive']} = {tot['naive'] / n:.1%}, "
          f"on truth tracks {tot['on_truth']} = {tot['on_truth'] / n:.1%} "
          f"(+stitch {tot['stitched']} = {tot['stitched'] / n:.1%}), "
          f"best these detections allow {tot['best']} = {tot['best'] / n:.1%}")
    print(f"{'scene':<15} {'zone':<7} {'truth entered':>13} {'ours':>5} {'on truth':>8} {'truth dwell s':>13} "
          f"{'ours':>6} {'on truth':>8}")
    for seq, name, t, o, g in zone_rows:
        print(f"{seq:<15} {name:<7} {t['entered']:>13} {o['entered']:>5} {g['entered']:>8} "
              f"{t['mean_dwell_s'] or 0:>13.2f} {o['mean_dwell_s'] or 0:>6.2f} {g['mean_dwell_s'] or 0:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
