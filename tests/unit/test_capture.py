from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from appliance.capture.frame import Frame
from appliance.capture.hub import ACCEPTED, CLOSED, REPLACED_OLDEST, EndOfStream, FrameHub
from appliance.capture.source import VideoSource, parse_uri
from appliance.errors import ApplianceError

VTEST_FRAMES = 795


def _frame(cam: str, seq: int) -> Frame:
    return Frame(np.zeros((2, 2, 3), np.uint8), cam, seq, time.monotonic(), time.time())


@pytest.mark.parametrize("uri, kind, target", [
    ("/videos/a.mp4", "file", "/videos/a.mp4"),
    ("file:///videos/a.mp4", "file", "/videos/a.mp4"),
    ("asset:vtest.avi", "file", "/cache/vtest.avi"),
    ("rtsp://user:pw@10.0.0.5:554/s1", "rtsp", "rtsp://user:pw@10.0.0.5:554/s1"),
    ("v4l2:///dev/video2", "v4l2", "/dev/video2"),
])
def test_parse_uri(uri, kind, target):
    spec = parse_uri(uri, Path("/cache"))
    assert (spec.kind, spec.target) == (kind, target)


@pytest.mark.parametrize("uri, message", [
    ("http://x/y.mjpg", "unsupported scheme 'http'"),
    ("v4l2:///tmp/x", "expected v4l2:///dev/videoN"),
])
def test_parse_uri_rejects(uri, message):
    with pytest.raises(ApplianceError, match=message):
        parse_uri(uri)


def test_hub_latest_wins_drops_oldest_and_counts():
    hub = FrameHub()
    hub.add_camera("a", latest_wins=True, capacity=2)
    outcomes = [hub.put(_frame("a", i)) for i in range(5)]
    assert hub.put(EndOfStream("a")) == ACCEPTED  # never dropped, even when the slot is full
    got = [hub.get(0.1) for _ in range(3)]
    assert [g.seq for g in got[:2]] == [3, 4]
    assert isinstance(got[2], EndOfStream)
    assert outcomes == [ACCEPTED, ACCEPTED] + [REPLACED_OLDEST] * 3  # the camera counts 3 drops


def test_hub_blocking_mode_loses_nothing_and_takes_cameras_in_turn():
    hub = FrameHub()
    hub.add_camera("a", latest_wins=False, capacity=1)
    hub.add_camera("b", latest_wins=False, capacity=1)

    outcomes = []

    def produce(cam):
        for i in range(50):
            outcomes.append(hub.put(_frame(cam, i)))
        hub.put(EndOfStream(cam))

    threads = [threading.Thread(target=produce, args=(c,)) for c in "ab"]
    for t in threads:
        t.start()
    seen = {"a": [], "b": []}
    ended = set()
    order = []
    while len(ended) < 2:
        item = hub.get(2.0)
        assert item is not None
        order.append(item.camera_id)
        if isinstance(item, EndOfStream):
            ended.add(item.camera_id)
        else:
            seen[item.camera_id].append(item.seq)
    assert seen == {"a": list(range(50)), "b": list(range(50))}
    assert set(outcomes) == {ACCEPTED}  # nothing dropped
    # Neither camera starves the other: both appear in the first few hand-outs.
    assert set(order[:4]) == {"a", "b"}


def test_hub_close_releases_a_blocked_producer():
    hub = FrameHub()
    hub.add_camera("a", latest_wins=False, capacity=1)
    hub.put(_frame("a", 0))
    result = []
    t = threading.Thread(target=lambda: result.append(hub.put(_frame("a", 1))))
    t.start()
    time.sleep(0.1)
    assert t.is_alive()  # waiting for room
    hub.close()
    t.join(1.0)
    assert result == [CLOSED]


def test_file_source_frames_carry_ids_and_times(assets_dir):
    src = VideoSource("cam1", "asset:vtest.avi", assets_dir, realtime=False)
    mono0, wall0 = time.monotonic(), time.time()
    frames = list(src.frames(threading.Event(), max_frames=30))
    mono1, wall1 = time.monotonic(), time.time()
    src.close()
    assert [f.seq for f in frames] == list(range(30))
    assert all(f.camera_id == "cam1" and f.image.shape == (576, 768, 3) for f in frames)
    mono = [f.t_capture_monotonic for f in frames]
    wall = [f.t_capture_wall for f in frames]
    assert mono == sorted(mono) and mono0 <= mono[0] and mono[-1] <= mono1
    assert wall == sorted(wall) and wall0 <= wall[0] and wall[-1] <= wall1
    # Read as fast as it decodes, yet each frame's time on the camera's timeline is the
    # video's own (10 fps): track lifetimes, dwell and speed mean the same as in real time.
    assert [f.t for f in frames] == pytest.approx([i / 10 for i in range(30)])


class PacingClock:
    """A fake clock for a file source's realtime pacing: decoding takes no time, and a
    wait passes its time at once and is recorded."""

    def __init__(self) -> None:
        self.t = 0.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.t

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        self.waits.append(seconds)
        self.t += seconds
        return stop.is_set()


def test_file_source_realtime_paces_at_native_rate(assets_dir):
    clock = PacingClock()
    src = VideoSource("cam1", str(assets_dir / "vtest.avi"), realtime=True,  # 10 fps
                      clock=clock, wait=clock.wait)
    frames = list(src.frames(threading.Event(), max_frames=11))
    src.close()
    assert [f.seq for f in frames] == list(range(11))
    assert clock.waits == pytest.approx([0.1] * 10)  # the first frame at once, then one per 0.1 s


def test_file_source_loops(assets_dir):
    src = VideoSource("cam1", f"file://{assets_dir / 'bikes.mp4'}", realtime=False, loop=True)
    frames = list(src.frames(threading.Event(), max_frames=300))  # bikes.mp4 has 250
    src.close()
    assert len(frames) == 300 and frames[-1].seq == 299
    assert frames[-1].t == pytest.approx(299 / 25)  # the video's time goes on across the loop
    assert src.corrupt == 0


def test_file_source_stops_on_stop_event(assets_dir):
    src = VideoSource("cam1", "asset:vtest.avi", assets_dir, realtime=True)
    stop = threading.Event()
    frames = []
    for f in src.frames(stop):  # real pacing
        frames.append(f)
        if len(frames) == 2:
            stop.set()
    src.close()
    assert [f.seq for f in frames] == [0, 1]


def test_file_source_stop_during_the_pacing_wait_ends_it_at_once(assets_dir):
    clock = PacingClock()
    stop = threading.Event()

    def wait(stop_event: threading.Event, seconds: float) -> bool:
        if len(clock.waits) == 2:
            stop.set()  # during the wait for the fourth frame
        return clock.wait(stop_event, seconds)

    src = VideoSource("cam1", "asset:vtest.avi", assets_dir, realtime=True, clock=clock, wait=wait)
    frames = list(src.frames(stop))
    src.close()
    assert [f.seq for f in frames] == [0, 1, 2] and len(clock.waits) == 3  # the fourth never came


def test_missing_and_garbage_files_are_clear_errors(tmp_path):
    with pytest.raises(ApplianceError, match=r"camera c: video file .*nope.mp4 not found"):
        VideoSource("c", str(tmp_path / "nope.mp4")).open()
    junk = tmp_path / "junk.avi"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 100_000, dtype=np.uint8).tobytes())
    with pytest.raises(ApplianceError, match=r"camera c: cannot open .*junk.avi"):
        VideoSource("c", str(junk)).open()


def damaged_copy(src: Path, dest: Path) -> Path:
    """vtest.avi with 300 kB in the middle zeroed: about 33 frames cannot be decoded."""
    data = bytearray(src.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 300_000] = bytes(300_000)
    dest.write_bytes(bytes(data))
    return dest


def test_corrupt_frames_mid_stream_are_counted_and_skipped(assets_dir, tmp_path):
    bad = damaged_copy(assets_dir / "vtest.avi", tmp_path / "damaged.avi")
    src = VideoSource("c", str(bad), realtime=False)
    frames = list(src.frames(threading.Event()))
    src.close()
    assert len(frames) > VTEST_FRAMES * 0.9  # the stream went on past the damage
    assert src.corrupt == VTEST_FRAMES - len(frames) > 0
