"""sd_notify for systemd's Type=notify units: READY, STATUS, WATCHDOG and STOPPING.

No dependency: one AF_UNIX datagram per message to $NOTIFY_SOCKET (a path, or an abstract
socket written `@name`), nothing at all when it is unset (run outside systemd), and a
failed send is logged once and never stops the appliance
(https://www.freedesktop.org/software/systemd/man/sd_notify.html).

`SystemdNotifier` is a pipeline Service (appliance/pipeline.py), appended last by
`appliance run` when $NOTIFY_SOCKET is set, so its start() comes after the stages and every other service started:
it sends READY=1 there, then its own thread sends STATUS=<status line> every
`log.stats_interval_s`, WATCHDOG=1 every half of $WATCHDOG_USEC while `healthy()` holds,
and STOPPING=1 as soon as a stop is requested (a signal sets the pipeline's stop event,
which wakes the thread) or the pipeline ends by itself.

The watchdog rule (`Health`): the appliance is healthy when

- a stop was requested, or every capture has ended and none of them failed: it is
  draining, bounded by its own shutdown timeouts (and by TimeoutStopSec); or
- every stage after capture (detect, track, track processors) has a live thread, and
  either a frame left the tracker within `window_s`, or no work is waiting: no capture
  delivered a frame within `window_s` and nothing sits in the frame hub or before the
  tracker (every live camera is disconnected and being retried).

So a wedged detector (frames keep arriving, or wait in the hub, but none comes out) or a
dead stage thread (a capture thread that failed included) stops the pings and systemd
restarts the appliance, while a camera outage does not. When the pipeline ends by itself
with a live camera (`unexpected_end`), `appliance run` exits 1 so that Restart=on-failure
restarts it. `window_s` is max(web.stale_after_s, the watchdog interval): a
wedge is acted on after at most window_s + WatchdogSec.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from appliance.pipeline import Pipeline

log = logging.getLogger(__name__)


def socket_address(value: str | None) -> str | bytes | None:
    """$NOTIFY_SOCKET as an address for socket.sendto: a path as it is, `@name` as the
    abstract name b"\\0name"; None when unset or not a Unix socket (e.g. vsock:)."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def watchdog_interval_s(env: Mapping[str, str], pid: int | None = None) -> float | None:
    """The watchdog interval from $WATCHDOG_USEC, if it is meant for this process
    ($WATCHDOG_PID unset or our pid); None otherwise or when unset/invalid."""
    usec, wpid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
    if not usec:
        return None
    if wpid:
        try:
            if int(wpid) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1e6 if value > 0 else None


class Notifier:
    """Sends sd_notify messages; a no-op without $NOTIFY_SOCKET."""

    def __init__(self, env: Mapping[str, str] | None = None):
        env = os.environ if env is None else env
        self.address = socket_address(env.get("NOTIFY_SOCKET"))
        self.watchdog_s = watchdog_interval_s(env)
        self._sock: socket.socket | None = None
        self._warned = False
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send "K=V" fields in one datagram; True when sent."""
        if self.address is None:
            return False
        msg = "\n".join(fields).encode()
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(msg, self.address)
                return True
            except OSError as e:
                if not self._warned:
                    log.warning("systemd: cannot notify %r: %s", self.address, e)
                    self._warned = True
                return False

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


class Health:
    """The watchdog rule (module docstring), on a pipeline's state; `clock` is injectable."""

    def __init__(self, pipeline: "Pipeline", window_s: float, clock: Callable[[], float] = time.monotonic):
        self.p = pipeline
        self.window_s = window_s
        self.clock = clock
        self._frames = self._input_frames()
        self._input_t = clock()  # last time a capture was seen delivering (start counts as such)
        self.reason = "ok"

    def _input_frames(self) -> int:
        return sum(c.frames for c in self.p.captures.values())

    def healthy(self) -> bool:
        p, now = self.p, self.clock()
        frames = self._input_frames()
        if frames != self._frames:
            self._frames, self._input_t = frames, now
        if p.stop_event.is_set():
            self.reason = "stopping"
            return True
        failed = failed_captures(p)
        if failed:  # beside cameras that still deliver, a dead one would go unnoticed
            self.reason = f"capture thread failed: {', '.join(failed)}"
            return False
        if not any(c.alive for c in p.captures.values()):
            self.reason = "stopping"
            return True
        captures = set(map(id, p.captures.values()))
        dead = [s.name for s in p.stages if id(s) not in captures and not s.alive]
        if dead:
            self.reason = f"stage thread ended: {', '.join(dead)}"
            return False
        if now - p.track.heartbeat <= self.window_s:
            self.reason = "ok"
            return True
        waiting = p.track.depth > 0 or any(p.hub.depth(cam) > 0 for cam in p.captures)
        if now - self._input_t <= self.window_s or waiting:
            self.reason = f"stuck: frames arrive but none left the tracker for {now - p.track.heartbeat:.1f} s"
            return False
        self.reason = "no input (cameras disconnected)"
        return True


def failed_captures(p: "Pipeline") -> list[str]:
    """Capture threads that ended because their loop raised (Stage._main counts it in
    stats.errors; a capture counts nothing else there)."""
    return [c.name for c in p.captures.values() if not c.alive and c.stats.errors]


def unexpected_end(p: "Pipeline", max_frames: int | None = None) -> str | None:
    """Why a pipeline that ended with no stop asked for should exit non-zero, or None.

    A live camera never ends by itself (its supervisor reconnects) unless --max-frames, and
    a capture thread that failed is a bug: either way the appliance must not exit 0, which
    Restart=on-failure would take as a deliberate end and leave the device without analytics."""
    if p.stop_event.is_set():
        return None
    failed = failed_captures(p)
    if failed:
        return f"capture thread failed: {', '.join(failed)}"
    ended = sorted(cam for cam in p.live_cameras if not p.captures[cam].alive)
    if ended and max_frames is None:
        return f"live camera capture ended by itself: {', '.join(ended)}"
    return None


class SystemdNotifier:
    """The Service that tells systemd how the appliance is (module docstring)."""

    name = "systemd"

    def __init__(self, pipeline: "Pipeline", env: Mapping[str, str] | None = None,
                 status_interval_s: float | None = None):
        self.p = pipeline
        self.notifier = Notifier(env)
        wd = self.notifier.watchdog_s
        self.window_s = max(pipeline.cfg.web.stale_after_s, wd or 0.0)
        self.health = Health(pipeline, self.window_s)
        self.status_interval_s = status_interval_s or pipeline.cfg.log.stats_interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping_sent = False
        self.pings = 0
        self.withheld = 0  # pings not sent because unhealthy

    def start(self) -> None:
        if not self.notifier.enabled:
            return
        self.notifier.notify("READY=1", f"STATUS=running: {self.p.cfg.device.id}")
        if self.notifier.watchdog_s:
            log.info("systemd: watchdog every %.1f s, pings while healthy (stale after %.1f s)",
                     self.notifier.watchdog_s / 2, self.window_s)
        self._thread = threading.Thread(target=self._main, name="systemd-notify", daemon=True)
        self._thread.start()

    def _send_stopping(self) -> None:
        if not self._stopping_sent:
            self._stopping_sent = True
            self.notifier.notify("STOPPING=1", "STATUS=stopping: flushing what is in flight")

    def _main(self) -> None:
        from appliance import status

        wd = self.notifier.watchdog_s
        tick = min(self.status_interval_s, wd / 2 if wd else self.status_interval_s, 1.0)
        next_status = next_ping = time.monotonic()
        was_healthy = True
        while not self._stop.is_set():
            now = time.monotonic()
            if self.p.stop_event.is_set() or not self.p.running:
                self._send_stopping()
            elif now >= next_status:
                try:
                    self.notifier.notify(f"STATUS={status.status_line(self.p)}")
                except Exception:  # a status read racing a stage must not end the pings
                    log.debug("systemd: status line failed", exc_info=True)
                next_status = now + self.status_interval_s
            if wd and now >= next_ping:
                healthy = self.health.healthy()
                if healthy:
                    self.notifier.notify("WATCHDOG=1")
                    self.pings += 1
                else:
                    self.withheld += 1
                if healthy != was_healthy:
                    (log.info if healthy else log.error)(
                        "systemd: watchdog pings %s (%s)", "resumed" if healthy else "withheld",
                        self.health.reason)
                    was_healthy = healthy
                next_ping = now + wd / 2
            # A stop request wakes this at once, for a prompt STOPPING=1.
            waker = self._stop if self._stopping_sent else self.p.stop_event
            waker.wait(tick)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        if self.notifier.enabled:
            self._send_stopping()
        self.notifier.close()

    def status(self) -> dict[str, Any]:
        state = "stopping" if self._stopping_sent else "ready" if self._thread is not None else "off"
        return {"state": state, "watchdog_s": self.notifier.watchdog_s, "watchdog": self.health.reason,
                "pings": self.pings, "withheld": self.withheld}
