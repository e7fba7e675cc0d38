"""The uplink service: ships the SQLite outbox to the broker, in order, at least once.

One thread, `uplink`, does all of it: connect (pacing.backoff_delay between attempts),
publish unsent rows, mark them sent when their PUBACKs arrive, answer commands, publish
stats, apply the backlog limits. paho's network thread only records what happened
(link.py). The guarantee, and why it holds, is written down in docs/mqtt.md.

Send order within one connection: `dropped` notices, then alerts (priority 0), then
routine updates (priority 1), each stream in its own key order, one stream per message,
at most `max_inflight` messages unacknowledged. A connection starts every stream again
at its first unsent row, so whatever was in flight when a connection (or the process)
died is sent again: a duplicate, never a gap or an overtaking.

Snapshots (JPEG files named by `end` events) come last, only while no unsent event waits
(snapshot_sender.py).
"""
from __future__ import annotations

import logging
import os
import queue
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from appliance import __version__, metrics, paths
from appliance.config import Config
from appliance.events.snapshots import snapshots_dir
from appliance.uplink.commands import Commands
from appliance.uplink.counts import CountsPublisher
from appliance.uplink.discovery import HomeAssistant
from appliance.uplink.link import Link
from appliance.uplink.messages import (
    Topics,
    command_result,
    events_message,
    offline_status,
    online_status,
    stats_message,
)
from appliance.uplink.outbox import ALERT, ROUTINE, Backlog, Outbox, snapshot_of
from appliance.uplink.pacing import TokenBucket, backoff_delay
from appliance.uplink.retention import Retention
from appliance.uplink.settings import link_settings
from appliance.uplink.snapshot_sender import SnapshotSender

log = logging.getLogger(__name__)

NOTICES = -1  # the stream of `dropped` notices, sent before alerts
STREAMS = (NOTICES, ALERT, ROUTINE)
POLL_S = 0.25  # how often to look for new rows when idle
BACKLOG_REFRESH_S = 1.0
OFFLINE_ACK_WAIT_S = 2.0


@dataclass(frozen=True)
class _InFlight:
    stream: int
    keys: list[int]  # seqs, or notice numbers
    snapshots: tuple = ()  # (seq, event id, file, ts) of the `end` events in it that name one


class Uplink:
    name = "uplink"

    def __init__(self, cfg: Config, data_dir: Path, pipeline: Any = None,
                 pacing_clock: Callable[[], float] = time.monotonic):
        """pacing_clock: the bandwidth cap's clock (tests pass a fake one)."""
        self.cfg, self.u, self.device = cfg, cfg.uplink, cfg.device.id
        self.topics = Topics(self.u.topic_prefix, self.device)
        self.settings = link_settings(cfg, self.topics)
        self.data_dir, self.pipeline = data_dir, pipeline
        self.outbox = Outbox(paths.db_path(data_dir))
        live = getattr(pipeline, "live", None)
        self.commands = Commands(cfg, live.jpeg if live else None, live.cameras if live else None,
                                 self._resync, models=getattr(pipeline, "models", None))
        self._retention: Retention | None = None  # counted in the thread: a big table takes a while
        # Per-minute counts (uplink/counts.py) and Home Assistant discovery (uplink/discovery.py).
        base = f"{self.topics.prefix}/{self.device}"
        self.counts = CountsPublisher(self.outbox.conn, f"{base}/counts", self.device,
                                      self.u.counts_interval_s, self.u.counts_delay_s)
        self.homeassistant = HomeAssistant(self.outbox.conn, cfg, f"{base}/analytics", self.topics.status,
                                           pipeline, __version__)
        self._bucket = TokenBucket(self.u.bandwidth_bytes_per_s, clock=pacing_clock)
        self._wake, self._stop = threading.Event(), threading.Event()
        self._drain_until = 0.0
        self._thread = threading.Thread(target=self._run, name="uplink", daemon=True)
        self._inflight: dict[int, _InFlight] = {}
        self._cursor = dict.fromkeys(STREAMS, 0)
        self.snapshots = SnapshotSender(self.outbox, snapshots_dir(data_dir), self.topics, self._bucket)
        self._control_mids: set[int] = set()
        self._next_retention = self._next_backlog = 0.0
        # What status() reports.
        self.state = "starting"
        self.last_error, self.last_error_at = "", None
        self.events_sent = self.events_dropped = self.connects = 0
        self.backlog = Backlog(0, 0, None)
        self._logged_error, self._logged_at = "", 0.0

    # -- service interface ------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Keep sending for up to uplink.drain_timeout_s while connected, then say offline."""
        self._drain_until = time.monotonic() + self.u.drain_timeout_s
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(self.u.drain_timeout_s + 15.0)

    def status(self) -> dict[str, Any]:
        age = self.backlog.oldest_age_s()
        return {"state": self.state, "broker": self.settings.broker, "backlog_rows": self.backlog.rows,
                "oldest_unsent_age_s": None if age is None else round(age, 1),
                "last_error": self.last_error or None, "last_error_at": self.last_error_at,
                "events_sent": self.events_sent, "events_dropped": self.events_dropped,
                "inflight": len(self._inflight), "connects": self.connects, "pid": os.getpid(),
                "snapshots_sent": self.snapshots.sent, "snapshots_missing": self.snapshots.missing}

    # -- the thread --------------------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            link = None
            try:
                self._housekeeping()
                link = self._connect()
                if link.connected:
                    attempt = 0
                    self._session(link)
            except Exception as e:  # a bug or a broken disk must not end the uplink for good
                log.exception("uplink: unexpected failure; reconnecting")
                self._error(f"internal error: {type(e).__name__}: {e}")
            finally:
                if link is not None:
                    self._end(link)
            if not self._stop.is_set():
                self._idle(backoff_delay(attempt, self.u.reconnect_min_s, self.u.reconnect_max_s))
                attempt += 1
        self.state = "stopped"
        try:
            left = self.outbox.backlog().rows
            log.info("uplink: stopped%s", f"; {left} events left unsent for the next start" if left else "")
        finally:
            self.outbox.close()

    def _wait(self, timeout: float) -> None:
        self._wake.wait(max(0.0, timeout))
        self._wake.clear()

    def _idle(self, delay: float) -> None:
        self.state = "waiting"
        until = time.monotonic() + delay
        while not self._stop.is_set() and time.monotonic() < until:
            self._stop.wait(min(1.0, until - time.monotonic()))
            self._housekeeping()

    def _connect(self) -> Link:
        self.state = "connecting"
        link = Link(self.settings, self._wake)
        link.open()
        give_up = time.monotonic() + max(10.0, float(self.u.keepalive_s))
        while link.state == Link.CONNECTING and not self._stop.is_set():
            if time.monotonic() > give_up:
                link.error = f"no answer from {self.settings.broker}"
                break
            self._wait(0.5)
            self._housekeeping()
        if link.connected:
            self.connects += 1
            metrics.UPLINK_CONNECTS.inc()
            metrics.UPLINK_CONNECTED.set(1)
            log.info("uplink: connected to %s as %s", self.settings.broker, self.settings.client_id)
        elif not self._stop.is_set():
            metrics.UPLINK_CONNECT_FAILURES.inc()
            self._error(link.error or "connection failed")
        return link

    def _end(self, link: Link) -> None:
        if link.state == Link.CLOSED and link.error and not self._stop.is_set():
            self._error(link.error)
        link.close()
        metrics.UPLINK_CONNECTED.set(0)
        self._inflight.clear()  # their rows are still unsent in SQLite
        self.snapshots.restart()
        self.state = "disconnected"

    def _error(self, message: str) -> None:
        now = time.time()
        self.last_error, self.last_error_at = message, now
        if message != self._logged_error or now - self._logged_at > 60:
            log.warning("uplink: %s: %s", self.settings.broker, message)
            self._logged_error, self._logged_at = message, now

    def _session(self, link: Link) -> None:
        self.state = "connected"
        self._inflight.clear()
        self._control_mids.clear()
        self._cursor = dict.fromkeys(STREAMS, 0)  # start again from what SQLite says is unsent
        self.snapshots.restart()
        link.subscribe(self.topics.commands)
        self._publish_control(link, self.topics.status, self._online(), retain=True)
        self.counts.reset()
        self.homeassistant.reset()
        next_stats = time.monotonic()
        while link.connected:
            self._process_acks(link)
            self._process_commands(link)
            if self._stop.is_set() and (time.monotonic() >= self._drain_until or self._drained()):
                break
            bandwidth_wait = self._fill(link)
            self.counts.tick(lambda topic, payload: self._publish_control(link, topic, payload))
            self.homeassistant.tick(lambda topic, payload, retain: self._publish_control(
                link, topic, payload, retain=retain))
            if time.monotonic() >= next_stats:
                self._publish_control(link, self.topics.stats, self._stats(), qos=0)
                next_stats = time.monotonic() + self.u.stats_interval_s
            self._housekeeping()
            self._wait(min(POLL_S, bandwidth_wait, max(0.0, next_stats - time.monotonic())))
        self._process_acks(link)
        if link.connected:  # stopping: announce it, since a clean disconnect sends no will
            mid = self._publish_control(link, self.topics.status, offline_status(self.device), retain=True)
            until = time.monotonic() + OFFLINE_ACK_WAIT_S
            while link.connected and mid in self._control_mids and time.monotonic() < until:
                self._wait(0.05)
                self._process_acks(link)

    def _drained(self) -> bool:
        return (not self._inflight and not self.snapshots.inflight and not self.outbox.has_unsent()
                and not self.outbox.has_pending_snapshots())

    def _publish_control(self, link: Link, topic: str, payload: bytes, qos: int = 1,
                         retain: bool = False) -> int | None:
        mid = link.publish(topic, payload, qos=qos, retain=retain)
        self._bucket.spend(len(payload))
        metrics.UPLINK_SENT_BYTES.inc(len(payload))
        if mid is not None and qos:
            self._control_mids.add(mid)
        return mid

    def _next_batch(self) -> tuple[int, list[tuple[int, str]]] | None:
        n = self.u.batch_size
        for stream in STREAMS:
            rows = (self.outbox.unsent_notices(self._cursor[stream], n) if stream == NOTICES
                    else self.outbox.unsent(stream, self._cursor[stream], n))
            if rows:
                return stream, rows
        return None

    def _fill(self, link: Link) -> float:
        """Publish until the window is full or nothing is left, then snapshots; seconds
        the bandwidth cap asks to wait (POLL_S when it asks nothing)."""
        while len(self._inflight) < self.u.max_inflight:
            wait = self._bucket.wait_s()
            if wait > 0:
                return wait
            batch = self._next_batch()
            if batch is None:
                return self.snapshots.fill(link) or POLL_S  # no event waits: snapshots may go
            stream, rows = batch
            payload = events_message(self.device, [p for _, p in rows])
            mid = link.publish(self.topics.events, payload)
            if mid is None:  # the connection just went; the session loop sees it
                break
            keys = [k for k, _ in rows]
            snaps = tuple(s for s in (snapshot_of(p) for _, p in rows) if s) if stream != NOTICES else ()
            self._inflight[mid] = _InFlight(stream, keys, snaps)
            self._cursor[stream] = keys[-1]
            self._bucket.spend(len(payload))
            metrics.UPLINK_SENT_BYTES.inc(len(payload))
        return POLL_S

    def _process_acks(self, link: Link) -> None:
        seqs: list[int] = []
        notices: list[int] = []
        snaps: list[tuple] = []  # snapshots of the acknowledged end events, to send now
        snaps_sent: list[int] = []
        while True:
            try:
                mid = link.acks.get_nowait()
            except queue.Empty:
                break
            done = self._inflight.pop(mid, None)
            if done is None:
                seq = self.snapshots.inflight.pop(mid, None)
                if seq is not None:
                    snaps_sent.append(seq)
                else:
                    self.counts.acked(mid)  # marks its rows sent when it carried counts
                    self._control_mids.discard(mid)
            elif done.stream == NOTICES:
                notices.extend(done.keys)
            else:
                seqs.extend(done.keys)
                snaps.extend(done.snapshots)
        if snaps:  # before the events are marked: a crash between sends the events again, not less
            self.outbox.queue_snapshots(snaps)
        if seqs or notices:
            self.outbox.mark_sent(seqs, notices)
            self.events_sent += len(seqs)
            metrics.UPLINK_EVENTS_SENT.inc(len(seqs))
        if snaps_sent:
            self.snapshots.acked(snaps_sent)

    def _process_commands(self, link: Link) -> None:
        while not link.commands.empty():
            topic, payload, retained = link.commands.get_nowait()
            name = topic[len(self.topics.command_prefix):]
            if topic == self.topics.result or not topic.startswith(self.topics.command_prefix):
                continue  # our own results come back through cmd/#
            if retained:  # a retained command would run again on every reconnect
                log.warning("uplink: ignoring retained command on %s", topic)
                continue
            reply = self.commands.run(name, payload)
            metrics.UPLINK_COMMANDS.labels(reply.command or "unknown", str(reply.ok).lower()).inc()
            if reply.snapshot is not None:
                self._publish_control(link, self.topics.snapshot, reply.snapshot)
            self._publish_control(link, self.topics.result, command_result(
                self.device, reply.command or name, reply.correlation_id, reply.ok, reply.result, reply.error))
            log.info("uplink: command %s: %s", name, "ok" if reply.ok else f"error: {reply.error}")

    def _resync(self, since: float) -> int:
        n = self.outbox.requeue_since(since)
        self.outbox.requeue_snapshots_since(since)
        # Acks still due for messages in flight must not mark re-queued rows sent again:
        # forget them, and read every stream again from its first unsent row.
        self._inflight.clear()
        self._cursor = dict.fromkeys(STREAMS, 0)
        self.snapshots.restart()
        self._next_backlog = 0.0
        log.info("uplink: resync since %.3f: %d events queued again", since, n)
        return n

    # -- housekeeping -------------------------------------------------------------------

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now >= self._next_retention:
            if self._retention is None:
                self._retention = Retention(self.outbox.conn, self.u.backlog, self.device)
            drops = self._retention.enforce()
            self.events_dropped += sum(d.count for d in drops)
            self.outbox.prune_snapshots()
            self._next_retention = now + self.u.backlog.check_interval_s
            self._next_backlog = 0.0 if drops else self._next_backlog
        if now >= self._next_backlog:
            self.backlog = self.outbox.backlog()
            metrics.UPLINK_BACKLOG_ROWS.set(self.backlog.rows)
            metrics.UPLINK_OLDEST_UNSENT_AGE.set(self.backlog.oldest_age_s() or 0.0)
            self._next_backlog = now + BACKLOG_REFRESH_S

    def _online(self) -> bytes:
        det = getattr(self.pipeline, "detector", None)
        model = None if det is None else {"name": det.name, "version": det.version,
                                           "backend": det.backend.name, "device": det.backend.device}
        return online_status(self.device, __version__, model)

    def _stats(self) -> bytes:
        db = paths.db_path(self.data_dir)
        db_bytes = sum(p.stat().st_size for p in (db, db.with_name(db.name + "-wal")) if p.exists())
        usage = shutil.disk_usage(self.data_dir)
        disk = {"db_bytes": db_bytes, "free_bytes": usage.free, "total_bytes": usage.total}
        pipeline_status = self.pipeline.status() if self.pipeline is not None else None
        return stats_message(self.device, pipeline_status, self.status(), disk)
