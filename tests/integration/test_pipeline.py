"""The appliance end to end: real model, real video, real SQLite, through the real CLI."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from appliance.events.types import TRACK_TYPES
from tests.unit.test_capture import VTEST_FRAMES, damaged_copy


def appliance(*args: str, data_dir: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=300, **kw)


def stored(data_dir: Path) -> list[dict]:
    r = appliance("events", "--json", "--limit", "100000", data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def wait_for_stored(data_dir: Path, n: int, timeout_s: float = 120.0) -> None:
    """Until the running appliance has committed n events (the deadline only guards a hang)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(f"file:{data_dir / 'appliance.db'}?mode=ro", uri=True) as conn:
                if conn.execute("SELECT count(*) FROM events").fetchone()[0] >= n:
                    return
        except sqlite3.Error:
            pass  # not created yet
        time.sleep(0.2)
    raise AssertionError(f"fewer than {n} events stored in {timeout_s} s")


def assert_lifecycles_complete(events: list[dict]) -> None:
    """Every track that started has exactly one end, after its new, and ids are unique."""
    assert len({e["id"] for e in events}) == len(events)
    by_track: dict[tuple, list[str]] = {}
    for e in sorted(events, key=lambda e: e["seq"]):
        if e["type"] not in TRACK_TYPES:  # state (an adaptive stride change), line and zone events
            continue
        by_track.setdefault((e["camera"], e["track_id"]), []).append(e["type"])
    for key, types in by_track.items():
        assert types[0] == "new" and types[-1] == "end" and types.count("end") == 1, (key, types)
        assert types.count("new") == 1, (key, types)


def test_demo_video_fast_end_to_end(data_dir):
    r = appliance("run", "--fast", "--max-frames", "300", data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    assert "events_stored=" in r.stderr and "fps=" in r.stderr and "infer_ms=" in r.stderr
    events = stored(data_dir)
    assert_lifecycles_complete(events)
    labels = Counter(e["label"] for e in events if e["type"] == "new")
    assert labels["person"] >= 5  # vtest.avi is a street full of pedestrians
    for e in (e for e in events if e["type"] in TRACK_TYPES):
        assert {"id", "type", "camera", "track_id", "label", "score", "box", "ts"} <= e.keys()
        assert e["camera"] == "demo" and e["id"] == f"{e['device']}:{e['seq']}"
        x1, y1, x2, y2 = e["box"]
        assert 0 <= x1 < x2 <= 768 and 0 <= y1 < y2 <= 576
        assert 0.5 <= e["score"] <= 1.0
        assert abs(e["ts"] - time.time()) < 600
    # The text listing shows the same events.
    text = appliance("events", "--limit", "5", data_dir=data_dir).stdout.splitlines()
    assert len(text) == 5 and all("demo" in line for line in text)


def test_restart_continues_ids_and_track_ids(data_dir):
    for _ in range(2):
        r = appliance("run", "--fast", "--max-frames", "60", data_dir=data_dir)
        assert r.returncode == 0, r.stderr
    events = stored(data_dir)
    assert_lifecycles_complete(events)  # would fail if the second run reused track ids
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly_and_flushes(data_dir, sig):
    # Native rate (10 fps): the 80 s video is far from over when the signal comes.
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "run", "--data-dir", str(data_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_stored(data_dir, 4)
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, err
    assert "stopping" in err and "finished" in err
    events = stored(data_dir)
    assert len(events) > 3
    assert_lifecycles_complete(events)  # live tracks got their end events on the way out
    conn = sqlite3.connect(data_dir / "appliance.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_corrupt_frames_mid_stream_do_not_stop_the_pipeline(data_dir, assets_dir, tmp_path):
    bad = damaged_copy(assets_dir / "vtest.avi", tmp_path / "damaged.avi")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"cameras:\n  - {{id: gate, source: '{bad}'}}\n")
    r = appliance("run", "--fast", "--config", str(cfg), data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    assert "could not be decoded (skipped)" in r.stderr
    finished = [line for line in r.stderr.splitlines() if "finished:" in line][-1]
    frames = int(finished.split("frames=")[1].split()[0])
    corrupt = int(finished.split("corrupt=")[1].split()[0])
    assert corrupt > 0 and frames + corrupt == VTEST_FRAMES
    assert_lifecycles_complete(stored(data_dir))


def _one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    assert errors == [lines[-1]] and lines[-1].startswith("appliance: error: "), r.stderr
    for n in needles:
        assert n in lines[-1], lines[-1]


def test_unreadable_video_is_a_one_line_error(data_dir, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(50_000))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"cameras:\n  - {{id: gate, source: '{junk}'}}\n")
    _one_line_error(appliance("run", "--config", str(cfg), data_dir=data_dir), "camera gate", "junk.mp4")


def test_config_value_of_wrong_type_is_a_one_line_error(data_dir, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("track:\n  min_hits: soon\n")
    _one_line_error(appliance("run", "--config", str(cfg), data_dir=data_dir),
                    str(cfg), "track.min_hits", "expected an integer")


def test_missing_model_file_is_a_one_line_error(data_dir, tmp_path):
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "model.yaml").write_text(
        "name: gone\nversion: '1'\nfile: gone.tflite\nformat: tflite\n"
        "input: {width: 300, height: 300}\ndecoder: ssd\nlabels: [a]\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"detect:\n  model: {model_dir / 'model.yaml'}\n  classes: []\n")
    _one_line_error(appliance("run", "--config", str(cfg), data_dir=data_dir), "gone.tflite")


def test_status_command_reports_the_last_run(data_dir):
    assert appliance("status", data_dir=data_dir).returncode == 1  # nothing ran yet: clear error
    r = appliance("run", "--fast", "--max-frames", "50", data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    r = appliance("status", "--json", data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    status = json.loads(r.stdout)
    assert status["cameras"]["demo"]["frames"] == 50 and status["running"] is False
    text = appliance("status", data_dir=data_dir).stdout
    assert "camera demo:" in text and "stopped" in text


def test_a_second_appliance_on_the_same_data_dir_is_refused(data_dir):
    first = subprocess.Popen([sys.executable, "-m", "appliance", "run", "--data-dir", str(data_dir)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (data_dir / "appliance.db").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        second = appliance("run", "--max-frames", "5", data_dir=data_dir)
        _one_line_error(second, f"data directory {data_dir} is in use by another appliance",
                        f"pid {first.pid}")
        assert first.poll() is None  # the first one is unharmed
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=20)
    assert first.returncode == 0
    assert_lifecycles_complete(stored(data_dir))
