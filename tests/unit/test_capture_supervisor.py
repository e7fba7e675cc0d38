"""The camera supervisor's state machine, against a scripted camera.

The real thing (FFmpeg against a real RTSP server) is in tests/integration/test_rtsp_camera.py.
What cannot be made to happen on demand with a real backend is scripted here: a read
that hangs forever inside the backend (a wedged V4L2 driver, a GStreamer pipeline with
no timeout) and exact sequences of open failures.
"""
from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest

from appliance.capture.readers import SourceUnavailable
from appliance.capture.supervisor import CameraSupervisor, SupervisorPolicy


class ScriptedCamera:
    """A camera whose availability, failures and hangs the test controls.

    Like FFmpeg after a lost connection, a broken camera's reads fail at once; a hung
    camera's reads block until released (ignoring any timeout), like a wedged backend.
    """

    def __init__(self, fps: float = 50.0):
        self.period = 1.0 / fps
        self.up = threading.Event()
        self.up.set()
        self.broken = False  # reads fail
        self.hang = threading.Event()  # reads block while set
        self.released = threading.Event()  # released: hung reads return a frame
        self.opens: list[float] = []
        self.open_refusals = 0
        self.live_readers = 0
        self._lock = threading.Lock()

    def connect(self):
        self.opens.append(time.monotonic())
        if not self.up.is_set():
            self.open_refusals += 1
            raise SourceUnavailable("connection refused")
        cam = self

        class _Reader:
            description = "scripted"

            def __init__(self):
                with cam._lock:
                    cam.live_readers += 1

            def read(self):
                if cam.hang.is_set():
                    cam.released.wait()
                    return True, np.zeros((4, 4, 3), np.uint8)
                time.sleep(cam.period)
                if cam.broken or not cam.up.is_set():
                    return False, None
                return True, np.full((4, 4, 3), 7, np.uint8)

            def release(self):
                with cam._lock:
                    cam.live_readers -= 1

        return _Reader()


class Run:
    """A supervisor on its thread, recording frames and state changes."""

    def __init__(self, cam: ScriptedCamera, policy: SupervisorPolicy, max_frames=None):
        self.frames, self.states = [], []
        self.stop = threading.Event()
        self.sup = CameraSupervisor("c", "scripted", cam.connect, self._deliver, policy,
                                    on_state=self._on_state, max_frames=max_frames,
                                    rng=random.Random(1), tick_s=0.01)
        self.thread = threading.Thread(target=self.sup.run, args=(self.stop,), daemon=True)

    def _deliver(self, frame, read_s):
        self.frames.append(frame)
        return True

    def _on_state(self, state, previous, reason):
        self.states.append((time.monotonic(), state, previous, reason))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)
        assert not self.thread.is_alive()

    def wait_state(self, state: str, timeout: float) -> float:
        """Seconds until the supervisor is in `state`; fails after timeout."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.sup.state == state:
                return time.monotonic() - t0
            time.sleep(0.005)
        raise AssertionError(f"not {state} after {timeout} s: {self.sup.state} ({self.sup.reason})")


FAST = SupervisorPolicy(stall_timeout_s=0.5, open_timeout_s=0.5, backoff_initial_s=0.05,
                        backoff_max_s=0.2, max_read_failures=3)


def test_connects_streams_with_honest_times_and_stops():
    cam = ScriptedCamera()
    with Run(cam, FAST) as run:
        run.wait_state("streaming", 2)
        time.sleep(0.3)
    frames = run.frames
    assert len(frames) >= 5
    assert [f.seq for f in frames] == list(range(len(frames)))
    mono = [f.t_capture_monotonic for f in frames]
    assert mono == sorted(mono) and np.diff(mono).min() >= cam.period * 0.5
    assert abs(frames[-1].t_capture_wall - time.time()) < 2
    assert [s[1:3] for s in run.states] == [("streaming", "connecting")]
    assert cam.live_readers == 0  # the capture was released on stop


def test_failed_opens_back_off_capped_with_jitter_then_recover():
    cam = ScriptedCamera()
    cam.up.clear()
    with Run(cam, FAST) as run:
        run.wait_state("failed", 2)
        time.sleep(1.5)
        gaps = np.diff(cam.opens)
        cam.up.set()
        recovery = run.wait_state("streaming", 2)
    # Waits double from 0.05 s and stop at 0.2 s; jitter shortens each by up to 25 %.
    assert gaps[0] < 0.1 and gaps[1] > gaps[0]
    assert 0.2 * 0.75 - 0.02 <= gaps[-3:].min() and gaps.max() <= 0.2 + 0.1
    assert len(set(np.round(gaps[-4:], 3))) > 1  # jittered, not a fixed period
    assert recovery <= 0.2 + 0.2
    assert [s[1] for s in run.states] == ["failed", "streaming"]  # no event per retry
    assert run.sup.attempts == len(cam.opens) and run.sup.reconnects == 0


def test_failing_reads_mean_stalled_then_reconnect_continues_seq():
    cam = ScriptedCamera()
    with Run(cam, FAST) as run:
        run.wait_state("streaming", 2)
        time.sleep(0.2)
        cam.broken = True
        took = run.wait_state("stalled", 2)
        assert took < FAST.stall_timeout_s  # read errors are noticed before the watchdog
        assert "failed reads" in run.sup.reason
        cam.broken = False
        run.wait_state("streaming", 2)
        time.sleep(0.2)
    seqs = [f.seq for f in run.frames]
    assert seqs == list(range(len(seqs)))  # one sequence across both connections
    assert [s[1] for s in run.states] == ["streaming", "stalled", "streaming"]
    assert run.sup.reconnects == 1


def test_hung_read_is_caught_from_outside_and_abandoned():
    cam = ScriptedCamera()
    policy = SupervisorPolicy(stall_timeout_s=0.4, open_timeout_s=0.5, backoff_initial_s=0.05,
                              backoff_max_s=0.1, max_hung_readers=2)
    with Run(cam, policy) as run:
        run.wait_state("streaming", 2)
        cam.hang.set()  # the next read never returns
        t_hang = time.monotonic()
        run.wait_state("stalled", 2)
        stalled_after = run.states[-1][0] - t_hang
        assert policy.stall_timeout_s <= stalled_after <= policy.stall_timeout_s + 0.3
        # Every new connection hangs too; two stuck reads are the limit: no third thread.
        time.sleep(2.0)
        assert run.sup.state == "failed" and "stuck" in run.sup.reason
        assert cam.live_readers == 2
        n_frames = len(run.frames)
        cam.hang.clear()
        cam.released.set()  # the stuck reads return a frame each: too late, discarded
        run.wait_state("streaming", 3)
        time.sleep(0.2)
        assert run.sup.discarded == 2
    new = run.frames[n_frames:]
    assert new and all(f.image[0, 0, 0] == 7 for f in new)  # only frames from the fresh connection
    seqs = [f.seq for f in run.frames]
    assert seqs == list(range(len(seqs)))


def test_open_that_never_delivers_a_frame_times_out():
    cam = ScriptedCamera()
    cam.hang.set()  # opens, then the first read hangs
    policy = SupervisorPolicy(stall_timeout_s=0.3, open_timeout_s=0.3, backoff_initial_s=0.05,
                              backoff_max_s=0.1)
    with Run(cam, policy) as run:
        took = run.wait_state("failed", 3)
        assert 0.6 <= took <= 1.0 and "no frame within 0.6 s" in run.sup.reason
        cam.hang.clear()
        cam.released.set()


def test_max_frames_ends_the_run():
    cam = ScriptedCamera(fps=200)
    run = Run(cam, FAST, max_frames=20)
    run.thread.start()
    run.thread.join(5)
    assert not run.thread.is_alive()
    assert [f.seq for f in run.frames] == list(range(20))


@pytest.mark.parametrize("failures, lo, hi", [(0, 0.375, 0.5), (1, 0.75, 1.0), (3, 3.0, 4.0),
                                               (10, 3.75, 5.0), (1000, 3.75, 5.0)])
def test_backoff_doubles_is_capped_and_jittered(failures, lo, hi):
    p = SupervisorPolicy(backoff_initial_s=0.5, backoff_max_s=5.0, jitter=0.25)
    rng = random.Random(0)
    waits = [p.backoff_s(failures, rng) for _ in range(200)]
    assert lo <= min(waits) and max(waits) <= hi
    assert max(waits) - min(waits) > 0.1 * (hi - lo)  # spread, not a constant
