"""Time our tracker against a straightforward SORT on the 11 MOT15 detection files.

    python tests/bench/bench_tracker.py [--repeat N] [--det-dir DIR] [--peers-python PY]

Parsing is done first and not timed. Each pass runs a fresh tracker per sequence;
the best of N passes is reported, to keep other load on the machine out of the
figures. Trackers timed: ours with the default `track` settings as `appliance track
--mot` uses them (2 s lifetimes, ByteTrack's low-score round, at 25 fps), ours with
SORT's settings (1 frame, no low-score round), and the baseline SORT (max_age=1,
min_hits=3, iou 0.3). Then the MOT figures of ours on TUD-Campus + TUD-Stadtmitte,
as tests/integration/test_mot_metrics.py scores them, when motmetrics is installed,
and with --peers-python those of the peers run by tests/bench/mot_peers.py under
that interpreter (a throwaway venv: the peers are not project dependencies).

Also the one place that knows where the MOT15 detections live
(``mot15_det_dir``, ``mot15_missing``): the integration test imports them.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from filterpy.kalman import KalmanFilter
from scipy.optimize import linear_sum_assignment

from appliance.config.track import TrackConfig
from appliance.track.mot import iter_frames, make_tracker, read_detections
from appliance.track.sort import Sort

REPO = Path(__file__).resolve().parents[2]

MOT15_SEQUENCES = (
    "ADL-Rundle-6", "ADL-Rundle-8", "ETH-Bahnhof", "ETH-Pedcross2", "ETH-Sunnyday",
    "KITTI-13", "KITTI-17", "PETS09-S2L1", "TUD-Campus", "TUD-Stadtmitte", "Venice-2",
)


def mot15_det_dir() -> Path:
    """$MOT15_DET_DIR, else <repo>/../shared/data/mot15-det."""
    env = os.environ.get("MOT15_DET_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data" / "mot15-det"


def mot15_missing(det_dir: Path | None = None) -> str | None:
    """Why the MOT15 detections can't be used, or None when all 11 files are there."""
    det_dir = det_dir or mot15_det_dir()
    if not det_dir.is_dir():
        return (f"MOT15 detections not found: {det_dir} is not a directory "
                "(set MOT15_DET_DIR to the folder holding TUD-Campus.txt etc.)")
    absent = [s for s in MOT15_SEQUENCES if not (det_dir / f"{s}.txt").is_file()]
    if absent:
        return f"MOT15 detections incomplete in {det_dir}: missing {', '.join(absent)}"
    return None


# --- Baseline: SORT as one would first write it, kept simple on purpose. ------

def _baseline_iou(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


class _BaselineTrack:
    def __init__(self, track_id, box):
        self.kf = KalmanFilter(dim_x=7, dim_z=4)
        self.kf.F = np.array([
            [1, 0, 0, 0, 1, 0, 0], [0, 1, 0, 0, 0, 1, 0], [0, 0, 1, 0, 0, 0, 1],
            [0, 0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 1, 0],
            [0, 0, 0, 0, 0, 0, 1]], dtype=float)
        self.kf.H = np.eye(4, 7)
        self.kf.R = np.diag([10.0, 10.0, 10.0, 10.0])
        self.kf.P = np.diag([10.0, 10.0, 10.0, 10.0, 1e4, 1e4, 1e4])
        self.kf.Q = np.diag([1.0, 1.0, 1.0, 1.0, 1e-3, 1e-3, 1e-5])
        self.kf.x[:4] = self.measurement(box)
        self.id = track_id
        self.hit_streak = 1
        self.time_since_update = 0

    @staticmethod
    def measurement(box):
        w, h = box[2] - box[0], box[3] - box[1]
        return np.array([[box[0] + w / 2], [box[1] + h / 2], [w * h], [w / h]])

    def box(self):
        cx, cy, s, r = self.kf.x[:4, 0]
        w = np.sqrt(s * r)
        h = s / w
        return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


class BaselineSort:
    """Straightforward SORT: python-loop IoU, a KalmanFilter built per track."""

    def __init__(self, max_age=1, min_hits=3, iou_threshold=0.3):
        self.max_age, self.min_hits, self.iou_threshold = max_age, min_hits, iou_threshold
        self.tracks = []
        self.next_id = 1

    def update(self, xyxy, score=None):
        for t in self.tracks:
            if t.kf.x[2, 0] + t.kf.x[6, 0] <= 0:
                t.kf.x[6, 0] = 0.0
            t.kf.predict()
            t.time_since_update += 1
        self.tracks = [t for t in self.tracks if np.all(np.isfinite(t.kf.x))]
        predicted = [t.box() for t in self.tracks]
        iou = np.zeros((len(xyxy), len(predicted)))
        for i, d in enumerate(xyxy):
            for j, p in enumerate(predicted):
                iou[i, j] = _baseline_iou(d, p)
        matched_dets = set()
        if iou.size:
            for i, j in zip(*linear_sum_assignment(-iou)):
                if iou[i, j] >= self.iou_threshold:
                    t = self.tracks[j]
                    t.kf.update(t.measurement(xyxy[i]))
                    t.hit_streak += 1
                    t.time_since_update = 0
                    matched_dets.add(i)
        for i, d in enumerate(xyxy):
            if i not in matched_dets:
                self.tracks.append(_BaselineTrack(self.next_id, d))
                self.next_id += 1
        out = []
        alive = []
        for t in self.tracks:
            if t.time_since_update == 0 and t.hit_streak >= self.min_hits:
                out.append((t.id, t.box()))
            if t.time_since_update > 0:
                t.hit_streak = 0
            if t.time_since_update <= self.max_age:
                alive.append(t)
        self.tracks = alive
        return out


# --- Timing -------------------------------------------------------------------

Frames = list[tuple[np.ndarray, np.ndarray]]


def load(det_dir: Path) -> dict[str, Frames]:
    """Every frame of every sequence, parsed: {sequence: [(xyxy, score), ...]}."""
    data = {}
    for seq in MOT15_SEQUENCES:
        dets = read_detections(det_dir / f"{seq}.txt")
        data[seq] = [(xyxy, score) for _, xyxy, score in iter_frames(dets)]
    return data


def time_pass(make: Callable[[], object], data: dict[str, Frames]) -> float:
    """Seconds to track every sequence once, with a fresh tracker per sequence."""
    start = time.perf_counter()
    for frames in data.values():
        tracker = make()
        for xyxy, score in frames:
            tracker.update(xyxy, score)
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="passes per tracker; best is kept")
    ap.add_argument("--det-dir", type=Path, default=None, help="MOT15 det folder")
    ap.add_argument("--peers-python", help="python of a venv with the peer trackers (see mot_peers.py)")
    args = ap.parse_args(argv)
    det_dir = args.det_dir or mot15_det_dir()
    reason = mot15_missing(det_dir)
    if reason:
        print(f"bench_tracker: {reason}", file=sys.stderr)
        return 2

    data = load(det_dir)
    n_frames = sum(map(len, data.values()))
    n_dets = sum(len(xyxy) for frames in data.values() for xyxy, _ in frames)
    trackers = {
        "ours": lambda: make_tracker(TrackConfig(), 25.0),
        "ours-sort": lambda: Sort(max_age_s=1 / 25, min_hits=3, iou_threshold=0.3),
        "baseline": lambda: BaselineSort(max_age=1, min_hits=3, iou_threshold=0.3),
    }
    best = {name: float("inf") for name in trackers}
    for _ in range(max(1, args.repeat)):
        for name, make in trackers.items():  # interleaved: drift in load hits both
            best[name] = min(best[name], time_pass(make, data))

    fps = {name: n_frames / t for name, t in best.items()}
    print(f"MOT15: {len(data)} sequences, {n_frames} frames, {n_dets} detections; "
          f"best of {args.repeat}")
    for name in trackers:
        print(f"  {name:<10}{fps[name]:9.0f} frames/s  ({best[name]:.3f} s)")
    print(f"  ratio ours/baseline: {fps['ours'] / fps['baseline']:.2f}x, "
          f"ours-sort/baseline: {fps['ours-sort'] / fps['baseline']:.2f}x")
    print_mot_figures(det_dir, args.peers_python)
    return 0


def print_mot_figures(det_dir: Path, peers_python: str | None = None) -> None:
    """MOTA, IDF1, switches and ids on TUD, as the integration test scores them."""
    import subprocess
    import tempfile

    try:
        from tests.integration.test_mot_metrics import GT_SEQUENCES, score_results, score_tud
    except ImportError as e:  # motmetrics is a test dependency
        print(f"MOT figures skipped: {e}")
        return
    print("TUD-Campus + TUD-Stadtmitte, 25 fps, IoU 0.5 (issue 10 target: MOTA >= 72.6 %, "
          "IDF1 >= 82 %, switches <= 12, ids/18 <= 1.4):")
    with tempfile.TemporaryDirectory() as tmp:
        for name, fill in (("ours", True), ("ours, online (no gap filling)", False)):
            _, mota, idf1, sw, ids = score_tud(det_dir, Path(tmp), fill_gaps=fill)
            print(f"  {name:<30} MOTA {mota:6.1%}  IDF1 {idf1:6.1%}  switches {sw:3d}  ids {ids} "
                  f"({ids / 18:.2f})")
        if not peers_python:
            return
        out = Path(tmp) / "peers"
        r = subprocess.run([peers_python, "-m", "tests.bench.mot_peers", str(det_dir), str(out), *GT_SEQUENCES],
                           cwd=REPO, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"peers skipped: {peers_python} failed: {r.stderr.strip().splitlines()[-1:]}")
            return
        for folder in sorted(out.iterdir()):
            _, mota, idf1, sw, ids = score_results(folder)
            print(f"  {folder.name:<30} MOTA {mota:6.1%}  IDF1 {idf1:6.1%}  switches {sw:3d}  ids {ids} "
                  f"({ids / 18:.2f})")


if __name__ == "__main__":
    sys.exit(main())
