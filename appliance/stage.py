"""What every stage of the pipeline is: one thread, an inbox, an outbox, and its own counters.

A stage takes items from its inbox, does its one job, and puts what it made into its
outbox. When its input ends it passes the end-of-stream mark on and its thread returns,
so shutdown flows down the chain and nothing in flight is lost. A fault is confined to
the item that caused it: the item is counted as an error, logged, and the stage goes on
with the next one. Every stage counts its own work in `StageStats`; status, metrics and
the dashboard read the counters from the stage that owns them.

`QueueStage` is the common case (capture and detect have their own loops, because their
inputs are a camera and the frame hub): subclass it and write `handle(item)`.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

log = logging.getLogger(__name__)


class _End:
    """The end-of-stream mark: everything before it has been put; nothing comes after."""

    def __repr__(self) -> str:
        return "END"


END = _End()


@dataclass
class StageStats:
    items: int = 0  # items handled (successfully or not)
    errors: int = 0  # items that raised and were skipped
    busy_s: float = 0.0  # time spent handling items

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


class Stage:
    """A named thread with counters. Subclasses write `run()` and, if they pass an
    end-of-stream mark on, `finish()` (called once, even when `run()` raised)."""

    def __init__(self, name: str):
        self.name = name
        self.stats = StageStats()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        try:
            self.run()
        except Exception:  # a bug in a stage's loop ends that stage, never the process
            self.stats.errors += 1
            log.exception("%s: stage failed", self.name)
        finally:
            self.finish()

    def run(self) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Pass the end-of-stream mark on."""

    def guarded(self, fn: Callable[..., Any], *args: Any, what: str = "item") -> tuple[bool, Any]:
        """Run one item's work, timed and counted; a fault skips only this item."""
        t0 = time.perf_counter()
        try:
            return True, fn(*args)
        except Exception:
            self.stats.errors += 1
            log.exception("%s: %s failed; skipped", self.name, what)
            return False, None
        finally:
            self.stats.items += 1
            self.stats.busy_s += time.perf_counter() - t0

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; True once it has ended."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.alive


class QueueStage(Stage):
    """A stage fed through a bounded queue: `put()` items, then `END`."""

    def __init__(self, name: str, maxsize: int = 8):
        super().__init__(name)
        self.inbox: queue.Queue = queue.Queue(maxsize=maxsize)

    def put(self, item: Any) -> None:
        self.inbox.put(item)

    @property
    def depth(self) -> int:
        return self.inbox.qsize()

    def run(self) -> None:
        while True:
            item = self.inbox.get()
            if item is END:
                return
            self.guarded(self.handle, item, what=self.describe(item))

    def handle(self, item: Any) -> None:
        raise NotImplementedError

    def describe(self, item: Any) -> str:
        return "item"
