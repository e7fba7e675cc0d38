"""Our SORT on the public MOT15 detections, scored with motmetrics; MOT file I/O."""
from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import pytest

from appliance.errors import ApplianceError
from appliance.track.mot import iter_frames, main, read_detections, track_mot, write_mot
from tests.bench.bench_tracker import MOT15_SEQUENCES, mot15_det_dir, mot15_missing

if not hasattr(np, "asfarray"):
    # motmetrics 1.4.0 still calls np.asfarray, which numpy 2 removed.
    np.asfarray = lambda a, dtype=float: np.asarray(a, dtype=dtype)
import motmetrics as mm  # noqa: E402  (needs the shim above)

GT_DIR = Path(mm.__file__).parent / "data"  # ground truth shipped in the wheel
GT_SEQUENCES = ("TUD-Campus", "TUD-Stadtmitte")


@pytest.fixture(scope="module")
def det_dir() -> Path:
    reason = mot15_missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return mot15_det_dir()


# motmetrics 1.4.0 itself trips a pandas deprecation warning; not ours to fix.
@pytest.mark.filterwarnings("ignore:Operation with tuple is deprecated")
def test_mota_on_tud_sequences(det_dir: Path, tmp_path: Path):
    accs = []
    for seq in GT_SEQUENCES:
        result = tmp_path / f"{seq}.txt"
        rows = track_mot(det_dir / f"{seq}.txt", max_age=1, min_hits=3, iou_threshold=0.3)
        with result.open("w") as f:
            write_mot(rows, f)
        ours = mm.io.loadtxt(result, fmt="mot15-2D")
        gt = mm.io.loadtxt(GT_DIR / seq / "gt.txt", fmt="mot15-2D")
        accs.append(mm.utils.compare_to_groundtruth(gt, ours, "iou", distth=0.5))
    mh = mm.metrics.create()
    summary = mh.compute_many(accs, names=list(GT_SEQUENCES),
                              metrics=mm.metrics.motchallenge_metrics, generate_overall=True)
    print()
    print(mm.io.render_summary(summary, formatters=mh.formatters,
                               namemap=mm.io.motchallenge_metric_names))
    overall = summary.loc["OVERALL"]
    # Reference SORT (max_age=1, min_hits=3, iou 0.3): MOTA 69.6%, 16 switches.
    assert overall["mota"] >= 0.696
    assert overall["num_switches"] <= 16


def test_main_writes_mot_results(det_dir: Path):
    line_re = re.compile(r"(\d+),(\d+),(-?\d+\.\d\d,){4}1,-1,-1,-1")
    for seq in MOT15_SEQUENCES:
        out = io.StringIO()
        assert main(str(det_dir / f"{seq}.txt"), out, 1, 3, 0.3) == 0
        lines = out.getvalue().splitlines()
        assert lines, seq
        last_frame = max(read_detections(det_dir / f"{seq}.txt"))
        for line in lines:
            assert len(line.split(",")) == 10
            m = line_re.fullmatch(line)
            assert m, f"{seq}: {line!r}"
            assert 1 <= int(m[1]) <= last_frame and int(m[2]) >= 1


# --- MOTChallenge I/O on small files -------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dets.txt"
    path.write_text(text)
    return path


def test_read_detections_and_gaps(tmp_path: Path):
    path = write(tmp_path, "1,-1,10,20,30,40,0.9,-1,-1,-1\n\n1,-1,0,0,5,5,0.5\n4,-1,1,2,3,4,0.7\n")
    dets = read_detections(path)
    assert sorted(dets) == [1, 4]
    np.testing.assert_allclose(dets[1][0], [10, 20, 40, 60, 0.9])
    frames = list(iter_frames(dets))
    assert [f for f, _, _ in frames] == [1, 2, 3, 4]  # frames without detections too
    assert frames[1][1].shape == (0, 4) and frames[1][2].shape == (0,)
    assert list(iter_frames({})) == []


def test_empty_frames_are_stepped(tmp_path: Path):
    # Seen on frames 1-4, then again at frame 9: with max_age=1 the frames in
    # between age the first track out, so the object comes back with a new id.
    text = "".join(f"{f},-1,100,100,50,100,1\n" for f in (1, 2, 3, 4, 9, 10, 11, 12))
    rows = track_mot(write(tmp_path, text), max_age=1, min_hits=3)
    ids = {frame: tid for frame, tid, *_ in rows}
    assert ids[4] == 1 and ids[11] == 2
    assert 9 not in ids and 10 not in ids  # back on probation, out of warm-up


@pytest.mark.parametrize(("text", "message"), [
    ("1,-1,10,20,30,40,0.9\n1,-1,abc,20,30,40,0.9\n",
     "line 2: expected at least 7 comma-separated numbers, got 'abc'"),
    ("1,-1,10,20,30,40\n", "line 1: expected at least 7 comma-separated numbers, "
     "got '1,-1,10,20,30,40'"),
    ("1 -1 10 20 30 40 0.9\n", "line 1: expected at least 7 comma-separated numbers"),
    ("\n\n0,-1,10,20,30,40,0.9\n", "line 3: frame must be an integer >= 1, got '0'"),
    ("1.5,-1,10,20,30,40,0.9\n", "line 1: frame must be an integer >= 1"),
])
def test_bad_detection_lines(tmp_path: Path, text: str, message: str):
    path = write(tmp_path, text)
    with pytest.raises(ApplianceError) as err:
        read_detections(path)
    assert str(err.value).startswith(f"{path} {message}")


def test_missing_file(tmp_path: Path):
    with pytest.raises(ApplianceError, match="nope.txt: cannot read detections"):
        main(str(tmp_path / "nope.txt"), io.StringIO())


def test_bad_settings(tmp_path: Path):
    path = write(tmp_path, "1,-1,10,20,30,40,0.9\n")
    with pytest.raises(ApplianceError, match="iou_threshold"):
        main(str(path), io.StringIO(), iou_threshold=2.0)


def test_write_mot_format():
    out = io.StringIO()
    write_mot([(3, 7, 1.0, 2.345, 10.0, 20.004)], out)
    assert out.getvalue() == "3,7,1.00,2.35,10.00,20.00,1,-1,-1,-1\n"
