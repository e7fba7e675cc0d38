"""Switching the running detector to another version, without stopping the pipeline.

    activate(NAME@VERSION)
      1. the version's files match the sha256 recorded at install (store.verify)
      2. it is loaded beside the running detector (which keeps detecting meanwhile)
      3. it has the running model's labels (the track processors were built for them)
      4. it passes the self-check against the running detector (selfcheck.py)
      5. the detect stage takes it between two batches (DetectStage.swap): no frame lost
      6. active.json records it; a `model` event announces it
      7. for `watch_s` the detection rate is watched: if it collapses to under
         `collapse_ratio` of the old model's, the old detector (still loaded) is swapped
         back, the store rolled back, and a `model` event says why.

A refused version leaves everything as it was, with a `model` event (state `rejected`)
and the reason in the error. `appliance model activate` (another process) only changes
active.json; the running appliance sees that within `poll_s` and switches the same way.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from appliance.modelstore.selfcheck import CheckPolicy, self_check
from appliance.modelstore.store import ModelRef, ModelStore, ModelStoreError, parse_ref

log = logging.getLogger(__name__)

CONFIGURED = "detect.model"  # how the configured model (no store version active) is named


@dataclass(frozen=True)
class WatchPolicy:
    watch_s: float = 180.0  # after an activation, how long the detection rate is watched
    min_frames: int = 100  # frames on the new model before its rate is judged
    collapse_ratio: float = 0.25  # new rate under this share of the old one: rolled back
    baseline_frames: int = 300  # the old model's most recent frames, for its rate
    score: float = 0.5  # detections from this score up count (detect.threshold)


def _name(ref: ModelRef | None) -> str:
    return CONFIGURED if ref is None else str(ref)


@dataclass
class _Watch:
    ref: ModelRef | None  # the new version
    old_ref: ModelRef | None
    old: Any  # the old detector, kept loaded until the watch ends
    old_rate: float
    ident: dict  # the new detector's {"name", "version"}, as FrameResult.model has it
    started: float  # clock
    t_command: float  # clock, when the activation was asked for
    frames: int = 0
    detections: int = 0
    first_frame_s: float | None = None  # command to first frame on the new model


class ModelManager:
    """Activation, rollback and the watch after it, for one pipeline (a Service)."""

    name = "models"

    def __init__(self, store: ModelStore, stage, load: Callable[[Path | None], Any],
                 running: ModelRef | None, state: Callable[..., None] | None = None,
                 on_swap: Callable[[Any], None] | None = None, check: CheckPolicy | None = None,
                 watch: WatchPolicy | None = None, assets_dir: Path | None = None,
                 poll_s: float = 2.0, clock: Callable[[], float] = time.monotonic):
        """load(manifest path or None for detect.model) -> a detector with the pipeline's
        settings; state(kind, camera, state, previous, reason, detail): the event sink's."""
        self.store, self.stage, self._load = store, stage, load
        self.running = running
        self._state, self._on_swap = state, on_swap
        self.check, self.watch_policy = check or CheckPolicy(), watch or WatchPolicy()
        self.assets_dir = assets_dir
        self.poll_s, self._clock = poll_s, clock
        self._lock = threading.Lock()  # one activation at a time
        self._watch: _Watch | None = None
        self._recent: deque = deque(maxlen=self.watch_policy.baseline_frames)  # detections per frame, running model
        self.last: dict[str, Any] = {}  # the last switch, for status and the bench
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.drift: Any = None  # the DriftMonitor beside it, for status()
        stage.observers.append(self.observe)

    # -- commands ---------------------------------------------------------------------

    def listing(self) -> dict[str, Any]:
        return {"running": _name(self.running), "versions": self.store.listing(self.running or ModelRef("", "")),
                "history": [_name(r) for r in self.store.history()]}

    def activate(self, ref: ModelRef | str, reason: str = "command") -> dict[str, Any]:
        """Switch to an installed version; ModelStoreError (nothing changed) when refused."""
        ref = parse_ref(ref) if isinstance(ref, str) else ref
        t_command = self._clock()
        with self._lock:
            if ref == self.running:
                raise ModelStoreError(f"model {ref} is already running")
            self.store.record(ref)  # unknown version: refused before anything is loaded
            out = self._switch(ref, reason, t_command, check=True)
            self.store.set_active(ref)
            return out

    def rollback(self, reason: str = "command") -> dict[str, Any]:
        """Back to the previous version (no self-check: it ran here before)."""
        t_command = self._clock()
        with self._lock:
            target = self.store.previous()  # none: refused
            out = self._switch(target, reason, t_command, check=False)
            self.store.rollback()
            return out

    # -- the switch -------------------------------------------------------------------

    def _switch(self, ref: ModelRef | None, reason: str, t_command: float, check: bool) -> dict[str, Any]:
        old, old_ref = self.stage.detector, self.running
        try:
            path = None if ref is None else self.store.verify(ref)
            new = self._load(path)
            if list(new.labels) != list(old.labels):
                raise ModelStoreError(
                    f"model {_name(ref)}: its labels differ from the running model's "
                    f"({len(new.labels)} against {len(old.labels)}); the track processors were built "
                    "for these: change detect.model and restart instead")
            report = None
            if check:
                report = self_check(new, old, assets_dir=self.assets_dir, policy=self.check)
                if not report.ok:
                    raise ModelStoreError(f"model {ref}: self-check failed: " + "; ".join(report.problems))
        except ModelStoreError as e:
            self._announce("rejected", _name(old_ref), str(e), {"model": _name(ref)})
            raise
        except Exception as e:  # ApplianceError from loading, or a backend's own error
            msg = f"model {_name(ref)}: cannot be loaded: {e}"
            self._announce("rejected", _name(old_ref), msg, {"model": _name(ref)})
            raise ModelStoreError(msg) from None
        recent = list(self._recent)  # one copy: the detect thread appends meanwhile
        old_rate = float(np.mean(recent)) if recent else 0.0
        self._watch = _Watch(ref, old_ref, old, old_rate, {"name": new.name, "version": new.version},
                             self._clock(), t_command)
        self.stage.swap(new)
        self.running = ref
        self._recent.clear()
        if self._on_swap:
            self._on_swap(new)
        self.last = {"model": _name(ref), "previous": _name(old_ref), "reason": reason,
                     "check": None if report is None else report.as_dict(),
                     "load_and_check_s": round(self._clock() - t_command, 3), "first_frame_s": None}
        self._announce(_name(ref), _name(old_ref), reason, {k: v for k, v in self.last.items() if k != "model"})
        log.info("model: %s -> %s (%s)", _name(old_ref), _name(ref), reason)
        return {"active": _name(ref), "previous": _name(old_ref), **{k: self.last[k] for k in
                                                                     ("check", "load_and_check_s")}}

    def _announce(self, state: str, previous: str, reason: str, detail: dict) -> None:
        if self._state is not None:
            self._state("model", "", state, previous, reason, detail)

    # -- the watch (detect thread) ----------------------------------------------------

    def observe(self, result) -> None:
        n = int((result.detections.score >= self.watch_policy.score).sum())
        w = self._watch
        if w is None or result.model != w.ident:
            self._recent.append(n)  # the running model's, before (or apart from) a watch
            return
        if w.first_frame_s is None:
            w.first_frame_s = self._clock() - w.t_command
            self.last["first_frame_s"] = round(w.first_frame_s, 3)
        w.frames += 1
        w.detections += n
        self._recent.append(n)
        self._judge(w)

    def _judge(self, w: _Watch) -> None:
        p = self.watch_policy
        if self._clock() - w.started > p.watch_s:
            self._watch = None  # passed: the old detector can go
            self.last["watch"] = "passed"
            return
        if w.frames < p.min_frames or w.old_rate <= 0:
            return
        rate = w.detections / w.frames
        if rate < p.collapse_ratio * w.old_rate:
            self._watch = None
            threading.Thread(target=self._auto_rollback, args=(w, rate), name="model-rollback",
                             daemon=True).start()

    def _auto_rollback(self, w: _Watch, rate: float) -> None:
        reason = (f"detection rate collapsed: {rate:.2f} detections per frame over {w.frames} frames, "
                  f"the previous model {w.old_rate:.2f} (rolled back under {self.watch_policy.collapse_ratio:g}x)")
        with self._lock:
            if self.running != w.ref:
                return
            self.stage.swap(w.old)  # still loaded: nothing to check, nothing to wait for
            self.running = w.old_ref
            if self._on_swap:
                self._on_swap(w.old)
            try:
                if self.store.active() == w.ref:
                    self.store.rollback()
            except ModelStoreError as e:
                log.error("model: rollback of the store failed: %s", e)
            self.last["watch"] = "rolled back"
            self._announce(_name(w.old_ref), _name(w.ref), reason,
                           {"rate": round(rate, 3), "previous_rate": round(w.old_rate, 3), "frames": w.frames})
            log.warning("model: %s rolled back to %s: %s", _name(w.ref), _name(w.old_ref), reason)

    # -- the store changed by another process (appliance model activate | rollback) ----

    def poll(self) -> None:
        try:
            wanted = self.store.active()
        except ModelStoreError as e:
            log.error("model: %s", e)
            return
        if wanted == self.running or self._lock.locked():
            return
        with self._lock:
            if self.store.active() != wanted or wanted == self.running:
                return
            try:
                self._switch(wanted, "store changed ('appliance model')", self._clock(), check=True)
            except ModelStoreError as e:
                log.error("model: %s; the store goes back to %s", e, _name(self.running))
                self._restore(self.running)

    def _restore(self, ref: ModelRef | None) -> None:
        """After a refused switch asked for by another process: make the store say what runs."""
        if self.store.history() and self.store.history()[-1] == ref:
            self.store.rollback()
        elif ref is not None:
            self.store.set_active(ref)

    # -- service ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="models", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.poll()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def status(self) -> dict[str, Any]:
        """For status.json, /api/status and the dashboard's tile: short values only."""
        w, last = self._watch, self.last
        out: dict[str, Any] = {"state": _name(self.running), "watching": w is not None}
        if last:
            out["last_switch"] = f"{last['previous']} -> {last['model']} ({last['reason']})" + (
                f", {last['watch']}" if last.get("watch") else "")
            out["first_frame_s"] = last.get("first_frame_s")
        if self.drift is not None:
            out["drift"] = {cam: d["score"] for cam, d in self.drift.status().items()}
        return out
