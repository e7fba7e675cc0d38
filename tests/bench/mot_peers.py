"""Run peer trackers over MOT15 detections and write their MOTChallenge results.

    PYTHON -m tests.bench.mot_peers DET_DIR OUT_DIR SEQUENCE...

Meant for a throwaway virtual environment holding the peers (never project
dependencies): `python -m venv /tmp/peers && /tmp/peers/bin/pip install trackers==2.6.1`.
bench_tracker.py runs it with `--peers-python /tmp/peers/bin/python` and scores what it
writes. Each peer runs with its default settings at 25 fps; BoT-SORT without camera
motion compensation, as there are no images. Only numpy and the peers are needed here.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def peers() -> dict:
    import trackers as t

    return {
        "ByteTrack (trackers)": lambda: t.ByteTrackTracker(frame_rate=25.0),
        "OC-SORT (trackers)": lambda: t.OCSORTTracker(frame_rate=25.0),
        "BoT-SORT, no CMC (trackers)": lambda: t.BoTSORTTracker(frame_rate=25.0, enable_cmc=False),
        "SORT (trackers)": lambda: t.SORTTracker(frame_rate=25.0),
    }


def frames(path: Path) -> list[np.ndarray]:
    """(N, 5) [x1, y1, x2, y2, score] per frame, from 1 to the last."""
    rows = np.loadtxt(path, delimiter=",", ndmin=2)
    out = []
    for f in range(1, int(rows[:, 0].max()) + 1):
        r = rows[rows[:, 0] == f]
        out.append(np.column_stack([r[:, 2], r[:, 3], r[:, 2] + r[:, 4], r[:, 3] + r[:, 5], r[:, 6]]))
    return out


def main(argv: list[str]) -> int:
    import supervision as sv

    det_dir, out_dir, seqs = Path(argv[0]), Path(argv[1]), argv[2:]
    for name, make in peers().items():
        for seq in seqs:
            tracker = make()
            lines = []
            for f, d in enumerate(frames(det_dir / f"{seq}.txt"), start=1):
                out = tracker.update(sv.Detections(xyxy=d[:, :4], confidence=d[:, 4],
                                                   class_id=np.zeros(len(d), dtype=int)))
                for (x1, y1, x2, y2), tid in zip(out.xyxy, out.tracker_id):
                    if tid >= 0:  # -1: not activated yet
                        lines.append(f"{f},{tid},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},1,-1,-1,-1\n")
            folder = out_dir / name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{seq}.txt").write_text("".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
