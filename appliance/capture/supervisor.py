"""One supervisor per live camera: connect, watch, reconnect; never stop the appliance.

    connecting -> streaming   the first frame arrives
    connecting -> failed      the attempt failed (refused, unreachable, no frame in time)
    streaming  -> stalled     no frame for stall_timeout_s, or reads fail; reconnecting
    stalled    -> streaming   the reconnection delivers frames
    stalled    -> failed      the reconnection attempt failed
    failed     -> streaming   a later attempt delivers frames; attempts are spaced by a
                              doubling, capped, jittered wait, and make no event each

Each connection runs on its own reader thread (`capture-<camera>`): open, then read frames
and hand them on. The supervisor thread (`camera-<camera>`) only watches the clock, so a
read that hangs inside a backend (one with no timeout of its own, a wedged driver) cannot
block it. A hung connection is abandoned: its thread keeps its capture and releases it if
the call ever returns, and a frame it reads after that is discarded and counted. At most
`max_hung_readers` abandoned threads may exist (each holds a native capture); beyond that
the camera stays failed until one returns.

Frames carry the time they were read (monotonic and wall clock, taken together), never
a time made up afterwards; `seq` keeps counting across reconnections, so it is unique
per camera for the life of the process.

A camera with a lower-resolution source (cameras[].detect_source, or detect_source_size
for V4L2/CSI) can be told to use it (`use_detect_source`, by the adaptive control): the
connection ends and the next one opens the other source, at once and with no state
change (a planned reconnection, not a stall). Frames of the low source carry the scale to
the main stream's pixels (Frame.scale), taken from the main stream's last frames, else
from the configured width and height.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable

from appliance import metrics
from appliance.capture.frame import MAIN, Frame
from appliance.capture.readers import FFMPEG, CaptureSettings, Reader, SourceUnavailable, open_reader, rtsp_options
from appliance.capture.source import SourceSpec, parse_uri, valid_image
from appliance.config import CameraConfig, redact_uri

log = logging.getLogger(__name__)

STATES = ("connecting", "streaming", "stalled", "failed")
_FINISHED = "finished"  # a connection ended because we are done (max frames, hub closed)
_SWITCH = "switch"  # a connection ended to open the other source (main <-> detect_source)
SOURCES = ("main", "detect_source")  # index 0 and 1 of a supervisor's sources


@dataclass(frozen=True)
class SupervisorPolicy:
    stall_timeout_s: float = 5.0
    open_timeout_s: float = 10.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 2.0
    jitter: float = 0.25  # each wait is shortened by up to this fraction, so cameras desynchronise
    max_read_failures: int = 5  # failed reads in a row that end a connection
    max_hung_readers: int = 2

    def backoff_s(self, failures: int, rng: random.Random) -> float:
        """The wait before the next attempt, after `failures` failed attempts in a row."""
        base = min(self.backoff_max_s, self.backoff_initial_s * 2.0 ** min(max(failures, 0), 30))
        return base * (1.0 - self.jitter * rng.random())


class _Connection:
    def __init__(self, gen: int, started: float, source: int = 0):
        self.gen = gen
        self.source = source  # 0: the main source, 1: the detect source
        self.cancel = threading.Event()
        self.lock = threading.Lock()  # makes "cancelled?" and "hand the frame on" one step
        self.started = started  # on the supervisor's clock
        self.frames = 0
        self.last_frame = 0.0  # when the last frame was handed on, on the supervisor's clock
        self.ended: str | None = None  # why the reader stopped by itself
        self.thread: threading.Thread | None = None

    def abandon(self) -> None:
        with self.lock:
            self.cancel.set()


class CameraSupervisor:
    """Keeps one live camera connected and hands its frames to `deliver(frame, read_s)`.

    `connect()` opens one connection (a Reader) or raises SourceUnavailable. `on_state`
    is called on the supervisor thread as `on_state(state, previous, reason)` for every
    change of state. `run(stop)` returns when stop is set or `max_frames` were read.

    `clock` (monotonic seconds) is what the timeouts are measured on, and
    `wait(stop, seconds)` (True when stop is set) spaces the attempts; tests pass fake ones
    to drive the timing exactly. Frames always carry the real read times.
    """

    def __init__(self, camera_id: str, description: str, connect: Callable[[], Reader],
                 deliver: Callable[[Frame, float], bool], policy: SupervisorPolicy,
                 on_state: Callable[[str, str, str], None] | None = None,
                 max_frames: int | None = None, rng: random.Random | None = None,
                 tick_s: float = 0.05, clock: Callable[[], float] = time.monotonic,
                 wait: Callable[[threading.Event, float], bool] | None = None,
                 low: tuple[Callable[[], Reader], str] | None = None,
                 main_size: tuple[int, int] | None = None):
        """low: (connect, description) of the detect source; main_size: the main stream's
        (width, height) as configured, until its frames tell."""
        self.camera_id = camera_id
        self.description = description
        self._sources = [(connect, description)] + ([low] if low is not None else [])
        self._want = 0  # the source the next connection opens
        self.main_size = main_size
        self._warned_scale = False
        self.policy = policy
        self._deliver = deliver
        self._on_state = on_state
        self._max_frames = max_frames
        self._rng = rng or random.Random()
        self._tick_s = tick_s
        self._clock = clock
        self._wait = wait or (lambda stop, seconds: stop.wait(seconds))
        self.state = "connecting"
        self.reason = "starting"
        self.since = time.time()
        self.attempts = 0  # connection attempts
        self.reconnects = 0  # connections that delivered frames, after the first one
        self.corrupt = 0  # failed reads followed by good ones
        self.discarded = 0  # frames read by an abandoned connection, never handed on
        self.last_read_s = 0.0
        self.last_frame_wall: float | None = None
        self._streamed_before = False
        self._seq = 0
        self._gen = 0
        self._lock = threading.Lock()
        self._conns: list[_Connection] = []

    # -- the supervisor thread -----------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        failures = 0
        conn: _Connection | None = None
        try:
            while not stop.is_set() and not self._finished():
                hung = self._hung()
                if hung >= self.policy.max_hung_readers:
                    self._set_state("failed", f"{hung} reads stuck in the capture backend; "
                                              "waiting for one to return")
                    self._wait(stop, self.policy.stall_timeout_s)
                    continue
                conn = self._start_connection()
                reason = self._watch(conn, stop)
                conn.abandon()
                if reason is None:
                    break
                if reason == _SWITCH:
                    # The same device may be opened next (V4L2, CSI): let this one go first.
                    if conn.thread is not None:
                        conn.thread.join(timeout=self.policy.stall_timeout_s)
                    log.info("camera %s: capture switches to %s (%s)", self.camera_id,
                             SOURCES[self._want], self._sources[self._want][1])
                    continue
                if conn.frames:
                    failures = 0
                    self._set_state("stalled", reason)
                else:
                    failures += 1
                    self._set_state("failed", reason)
                delay = self.policy.backoff_s(failures - 1, self._rng)
                log.debug("camera %s: attempt %d ended (%s); next in %.2f s",
                          self.camera_id, self.attempts, reason, delay)
                if self._wait(stop, delay):
                    break
        finally:
            for c in self._conns:
                c.abandon()
            if conn is not None and conn.thread is not None:
                conn.thread.join(timeout=1.0)  # let it release its capture; a hung one keeps it

    def use_detect_source(self, low: bool) -> bool:
        """Open the detect source (low) or the main one from the next connection on, ending
        the current one if it is the other. False when the camera has no detect source."""
        if len(self._sources) < 2:
            return False
        self._want = 1 if low else 0
        return True

    @property
    def capture(self) -> str:
        """The source connections open now: "main" or "detect_source"."""
        return SOURCES[self._want]

    def _start_connection(self) -> _Connection:
        self._gen += 1
        self.attempts += 1
        conn = _Connection(self._gen, self._clock(), self._want)
        self.description = self._sources[conn.source][1]
        conn.thread = threading.Thread(target=self._read, args=(conn,),
                                       name=f"capture-{self.camera_id}", daemon=True)
        self._conns.append(conn)
        conn.thread.start()
        return conn

    def _watch(self, conn: _Connection, stop: threading.Event) -> str | None:
        """Return why the connection is over, or None when we are stopping or done."""
        p = self.policy
        while not stop.wait(self._tick_s):
            if conn.source != self._want:
                return _SWITCH
            if conn.frames and self.state != "streaming":
                if self._streamed_before:
                    self.reconnects += 1
                self._streamed_before = True
                self._set_state("streaming", f"frames from {self.description}")
            if conn.ended is not None:
                return None if conn.ended == _FINISHED else conn.ended
            now = self._clock()
            if conn.frames:
                if now - conn.last_frame > p.stall_timeout_s:
                    return f"no frame for {p.stall_timeout_s:g} s"
            elif now - conn.started > p.open_timeout_s + p.stall_timeout_s:
                return f"no frame within {p.open_timeout_s + p.stall_timeout_s:g} s of connecting"
        return None

    def _hung(self) -> int:
        self._conns = [c for c in self._conns if c.thread is not None and c.thread.is_alive()]
        return sum(1 for c in self._conns if c.cancel.is_set())

    def _finished(self) -> bool:
        return self._max_frames is not None and self._seq >= self._max_frames

    def _set_state(self, state: str, reason: str) -> None:
        if state == self.state:
            self.reason = reason
            return
        previous, self.state, self.reason, self.since = self.state, state, reason, time.time()
        log.log(logging.INFO if state == "streaming" else logging.WARNING,
                "camera %s: %s -> %s: %s", self.camera_id, previous, state, reason)
        if self._on_state is not None:
            try:
                self._on_state(state, previous, reason)
            except Exception:  # reporting must never stop supervision
                log.exception("camera %s: state report failed", self.camera_id)

    # -- a reader thread (one per connection) ----------------------------------------

    def _read(self, conn: _Connection) -> None:
        try:
            reader = self._sources[conn.source][0]()
        except SourceUnavailable as e:
            conn.ended = str(e)
            return
        except Exception as e:  # a backend bug must not take the supervisor down
            log.debug("camera %s: connect failed", self.camera_id, exc_info=True)
            conn.ended = f"cannot open: {e}"
            return
        try:
            self._read_frames(conn, reader)
        except Exception as e:
            conn.ended = f"read failed: {e}"
        finally:
            reader.release()

    def _read_frames(self, conn: _Connection, reader: Reader) -> None:
        failures = 0
        while not conn.cancel.is_set():
            t0 = time.perf_counter()
            ok, img = reader.read()
            read_s = time.perf_counter() - t0
            if not ok or not valid_image(img):
                failures += 1
                if failures >= self.policy.max_read_failures:
                    conn.ended = f"{failures} failed reads in a row"
                    return
                continue
            if failures:
                with self._lock:
                    self.corrupt += failures
            failures = 0
            with conn.lock:
                if conn.cancel.is_set():  # abandoned while reading: too late to hand on
                    with self._lock:
                        self.discarded += 1
                    return
                with self._lock:
                    seq, self._seq = self._seq, self._seq + 1
                frame = Frame(img, self.camera_id, seq, time.monotonic(), time.time(),
                              self._scale(conn.source, img))
                self.last_read_s = read_s
                self.last_frame_wall = frame.t_capture_wall
                conn.last_frame = self._clock()  # before frames counts it: the watchdog reads both
                conn.frames += 1
                if not self._deliver(frame, read_s) or self._finished():
                    conn.ended = _FINISHED
                    return

    def _scale(self, source: int, img) -> tuple[float, float]:
        h, w = img.shape[:2]
        if source == 0:
            self.main_size = (w, h)
            return MAIN
        if self.main_size is None:
            if not self._warned_scale:
                self._warned_scale = True
                log.warning("camera %s: the main stream's size is not known yet (no frame from it, "
                            "no width and height configured); boxes from the detect source are "
                            "left in its own pixels", self.camera_id)
            return MAIN
        return (self.main_size[0] / w, self.main_size[1] / h)

    # -- reporting -------------------------------------------------------------------

    def health(self) -> dict:
        age = None if self.last_frame_wall is None else round(time.time() - self.last_frame_wall, 2)
        return {"state": self.state, "state_reason": self.reason, "state_since": self.since,
                "source": self.description, "attempts": self.attempts,
                "reconnects": self.reconnects, "last_frame_age_s": age,
                **({"capture": self.capture} if len(self._sources) > 1 else {})}


def supervise(cam: CameraConfig, spec: SourceSpec, deliver: Callable[[Frame, float], bool],
              on_state: Callable[[str, str, str], None] | None = None,
              max_frames: int | None = None) -> CameraSupervisor:
    """A supervisor for one configured live camera (cameras[] in the config)."""
    settings = CaptureSettings(
        rtsp_transport=cam.rtsp_transport, open_timeout_s=cam.open_timeout_s,
        read_timeout_s=cam.stall_timeout_s, width=cam.width, height=cam.height, fps=cam.fps,
        fourcc=cam.fourcc or "")
    if spec.kind == "rtsp":
        FFMPEG.register(cam.id, rtsp_options(settings))
    policy = SupervisorPolicy(
        stall_timeout_s=cam.stall_timeout_s, open_timeout_s=cam.open_timeout_s,
        backoff_initial_s=cam.backoff_initial_s, backoff_max_s=max(cam.backoff_max_s, cam.backoff_initial_s))
    attempts = metrics.CAMERA_CONNECT_ATTEMPTS.labels(cam.id)

    def connect() -> Reader:
        attempts.inc()
        return open_reader(cam.id, spec, settings)

    low = None
    if cam.has_detect_source:
        # The detect source: another URI of the same kind (an RTSP sub-stream), and/or a
        # smaller requested size (V4L2, CSI); FFmpeg options are the camera's own.
        low_spec = spec if cam.detect_source is None else parse_uri(cam.detect_source)
        size = cam.detect_source_size
        low_settings = settings if size is None else replace(settings, width=size[0], height=size[1])

        def connect_low() -> Reader:
            attempts.inc()
            return open_reader(cam.id, low_spec, low_settings)

        what = redact_uri(cam.detect_source or cam.source) + (f" at {size[0]}x{size[1]}" if size else "")
        low = (connect_low, what)
    main_size = (cam.width, cam.height) if cam.width and cam.height else None
    return CameraSupervisor(cam.id, redact_uri(cam.source), connect, deliver, policy, on_state, max_frames,
                            low=low, main_size=main_size)
