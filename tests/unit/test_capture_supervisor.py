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
        self.clock = time.monotonic  # Run puts the camera on the supervisor's clock
        self.up = threading.Event()
        self.up.set()
        self.broken = False  # reads fail
        self.broken_upto = 0  # reads of connections 1..broken_upto fail (break_current)
        self.hang = threading.Event()  # reads block while set
        self.released = threading.Event()  # released: hung reads return a frame
        self.opens: list[float] = []  # on the supervisor's clock
        self.open_refusals = 0
        self.connections = 0
        self.live_readers = 0
        self.hung_reads = 0  # reads blocked right now
        self.reads: list[tuple[float, float]] = []  # good reads: (began, returned), real monotonic
        self._lock = threading.Lock()

    def break_current(self) -> None:
        """The open connection breaks (its reads fail from now on); a new one works."""
        self.broken_upto = self.connections

    def connect(self):
        self.opens.append(self.clock())
        if not self.up.is_set():
            self.open_refusals += 1
            raise SourceUnavailable("connection refused")
        cam = self
        cam.connections += 1

        class _Reader:
            description = "scripted"

            def __init__(self):
                self.n = cam.connections
                with cam._lock:
                    cam.live_readers += 1

            def read(self):
                began = time.monotonic()
                if cam.hang.is_set():
                    with cam._lock:
                        cam.hung_reads += 1
                    cam.released.wait()
                    with cam._lock:
                        cam.hung_reads -= 1
                    return True, np.zeros((4, 4, 3), np.uint8)
                time.sleep(cam.period)
                if cam.broken or self.n <= cam.broken_upto or not cam.up.is_set():
                    return False, None
                cam.reads.append((began, time.monotonic()))
                return True, np.full((4, 4, 3), 7, np.uint8)

            def release(self):
                with cam._lock:
                    cam.live_readers -= 1

        return _Reader()


SUPERVISOR_THREAD = "camera-c"
DEADLINE_S = 30.0  # guards against hangs only; no outcome depends on how fast this machine is


def wait_until(predicate, what: str, timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not true after {timeout} s: {what}"
        time.sleep(0.002)


class FakeClock:
    """The supervisor's clock. It moves only when the test moves it, or when the
    supervisor waits between attempts (such a wait passes its time at once). So what
    the supervisor decides depends on the test's times, never on this machine's speed.
    """

    def __init__(self) -> None:
        self.t = 1000.0  # a binary fraction: sums of the test's steps stay exact
        self.waits: list[float] = []  # every wait the supervisor asked for, in order
        self._reads = 0  # by the supervisor thread
        self._cond = threading.Condition()

    def __call__(self) -> float:
        with self._cond:
            if threading.current_thread().name == SUPERVISOR_THREAD:
                self._reads += 1
                self._cond.notify_all()
            return self.t

    def advance(self, seconds: float) -> None:
        with self._cond:
            self.t += seconds

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        with self._cond:
            self.waits.append(seconds)
            self.t += seconds
        return stop.wait(0.001)  # a moment of real time, so that a loop of waits does not spin

    def settle(self) -> None:
        """Return once the supervisor has acted on the current time: its thread has looked
        at the clock twice since (the second look comes after the first one's decision)."""
        with self._cond:
            target = self._reads + 2
            assert self._cond.wait_for(lambda: self._reads >= target, DEADLINE_S), \
                "the supervisor stopped looking at its clock"


class Run:
    """A supervisor on its thread and a fake clock, recording frames and state changes."""

    def __init__(self, cam: ScriptedCamera, policy: SupervisorPolicy, max_frames=None):
        self.frames, self.states = [], []
        self.stop = threading.Event()
        self.clock = FakeClock()
        cam.clock = self.clock
        self.sup = CameraSupervisor("c", "scripted", cam.connect, self._deliver, policy,
                                    on_state=self._on_state, max_frames=max_frames,
                                    rng=random.Random(1), tick_s=0.01, clock=self.clock,
                                    wait=self.clock.wait)
        self.thread = threading.Thread(target=self.sup.run, args=(self.stop,), name=SUPERVISOR_THREAD,
                                       daemon=True)

    def _deliver(self, frame, read_s):
        self.frames.append(frame)
        return True

    def _on_state(self, state, previous, reason):
        self.states.append((self.clock.t, state, previous, reason))  # when, on the fake clock

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(DEADLINE_S)
        assert not self.thread.is_alive()

    def wait_state(self, state: str) -> None:
        # The supervisor sets its state, then reports it: wait for the report too.
        wait_until(lambda: self.sup.state == state and self.states and self.states[-1][1] == state,
                   f"state {state} (now {self.sup.state}: {self.sup.reason})")


FAST = SupervisorPolicy(stall_timeout_s=0.5, open_timeout_s=0.5, backoff_initial_s=0.05,
                        backoff_max_s=0.2, max_read_failures=3)


def test_connects_streams_with_honest_times_and_stops():
    cam = ScriptedCamera()
    mono0, wall0 = time.monotonic(), time.time()
    with Run(cam, FAST) as run:
        run.wait_state("streaming")
        wait_until(lambda: len(run.frames) >= 5, "5 frames")
    mono1, wall1 = time.monotonic(), time.time()
    frames = run.frames
    assert [f.seq for f in frames] == list(range(len(frames)))
    # Each frame carries the time its own read returned: stamped after that read, before
    # the next one began; not a time made up later.
    for f, (_, returned), (began_next, _) in zip(frames, cam.reads, cam.reads[1:]):
        assert returned <= f.t_capture_monotonic <= began_next
    assert mono0 <= frames[0].t_capture_monotonic and frames[-1].t_capture_monotonic <= mono1
    walls = [f.t_capture_wall for f in frames]
    assert walls == sorted(walls) and wall0 <= walls[0] and walls[-1] <= wall1
    assert [s[1:3] for s in run.states] == [("streaming", "connecting")]
    assert cam.live_readers == 0  # the capture was released on stop


def test_failed_opens_back_off_capped_with_jitter_then_recover():
    cam = ScriptedCamera()
    cam.up.clear()
    with Run(cam, FAST) as run:
        run.wait_state("failed")
        wait_until(lambda: len(cam.opens) >= 8, "8 attempts")
        tried = len(cam.opens)
        cam.up.set()
        run.wait_state("streaming")
    waits = np.array(run.clock.waits)
    # Waits double from 0.05 s and stop at 0.2 s; jitter shortens each by up to 25 %.
    assert 0.05 * 0.75 <= waits[0] <= 0.05 and 0.1 * 0.75 <= waits[1] <= 0.1
    assert all(0.2 * 0.75 <= w <= 0.2 for w in waits[2:])
    assert len(set(np.round(waits[2:], 6))) > 1  # jittered, not a fixed period
    # Each attempt follows its wait, with nothing in between.
    gaps = np.diff(cam.opens)
    assert np.allclose(gaps, waits[:len(gaps)])
    # Back: the first attempt after it streams (one may have been under way already).
    assert len(cam.opens) <= tried + 2
    assert [s[1] for s in run.states] == ["failed", "streaming"]  # no event per retry
    assert run.sup.attempts == len(cam.opens) and run.sup.reconnects == 0


def test_failing_reads_mean_stalled_then_reconnect_continues_seq():
    cam = ScriptedCamera()
    with Run(cam, FAST) as run:
        run.wait_state("streaming")
        wait_until(lambda: len(run.frames) >= 5, "5 frames")
        cam.break_current()
        run.wait_state("stalled")
        assert "failed reads" in run.sup.reason
        # Noticed from the reads: the clock has not moved, so the watchdog could not have fired.
        assert run.states[-1][0] == 1000.0
        run.wait_state("streaming")
        n = len(run.frames)
        wait_until(lambda: len(run.frames) >= n + 5, "5 frames from the new connection")
    seqs = [f.seq for f in run.frames]
    assert seqs == list(range(len(seqs)))  # one sequence across both connections
    assert [s[1] for s in run.states] == ["streaming", "stalled", "streaming"]
    assert run.sup.reconnects == 1


def test_hung_read_is_caught_from_outside_and_abandoned():
    cam = ScriptedCamera()
    policy = SupervisorPolicy(stall_timeout_s=0.5, open_timeout_s=0.5, backoff_initial_s=0.0625,
                              backoff_max_s=0.125, max_hung_readers=2)
    with Run(cam, policy) as run:
        run.wait_state("streaming")
        cam.hang.set()  # the next read never returns
        wait_until(lambda: cam.hung_reads == 1, "a read stuck in the backend")
        t_hang = run.clock.t  # the last frame came no later than this
        run.clock.advance(policy.stall_timeout_s)  # exactly the timeout: not over it yet
        run.clock.settle()
        assert run.sup.state == "streaming"
        run.clock.advance(0.0625)
        run.wait_state("stalled")
        assert run.states[-1][0] == t_hang + policy.stall_timeout_s + 0.0625  # at the first look past it
        assert "no frame for 0.5 s" in run.sup.reason
        # Every new connection hangs too; two stuck reads are the limit: no third thread.
        wait_until(lambda: cam.hung_reads == 2, "the new connection's read stuck as well")
        run.clock.advance(policy.open_timeout_s + policy.stall_timeout_s + 0.0625)
        wait_until(lambda: run.sup.state == "failed" and "stuck" in run.sup.reason, "failed: reads stuck")
        t_stuck = run.clock.t
        wait_until(lambda: run.clock.t >= t_stuck + 3 * policy.stall_timeout_s, "three more rounds of waiting")
        assert run.sup.state == "failed" and "stuck" in run.sup.reason
        assert len(cam.opens) == 2 and cam.live_readers == 2
        n_frames = len(run.frames)
        cam.hang.clear()
        cam.released.set()  # the stuck reads return a frame each: too late, discarded
        run.wait_state("streaming")
        wait_until(lambda: run.sup.discarded == 2 and len(run.frames) > n_frames, "both stuck frames discarded")
    new = run.frames[n_frames:]
    assert new and all(f.image[0, 0, 0] == 7 for f in new)  # only frames from the fresh connection
    seqs = [f.seq for f in run.frames]
    assert seqs == list(range(len(seqs)))


def test_open_that_never_delivers_a_frame_times_out():
    cam = ScriptedCamera()
    cam.hang.set()  # opens, then the first read hangs
    policy = SupervisorPolicy(stall_timeout_s=0.25, open_timeout_s=0.25, backoff_initial_s=0.0625,
                              backoff_max_s=0.125)
    with Run(cam, policy) as run:
        wait_until(lambda: cam.hung_reads == 1, "the first read stuck")
        t_open = cam.opens[0]
        run.clock.advance(0.5)  # open + stall timeout, exactly: not over yet
        run.clock.settle()
        assert run.sup.state == "connecting"
        run.clock.advance(0.0625)
        run.wait_state("failed")
        assert run.states[0][0] == t_open + 0.5625
        assert "no frame within 0.5 s" in run.sup.reason
        cam.hang.clear()
        cam.released.set()


def test_max_frames_ends_the_run():
    cam = ScriptedCamera(fps=200)
    run = Run(cam, FAST, max_frames=20)
    run.thread.start()
    run.thread.join(DEADLINE_S)
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
