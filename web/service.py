"""The dashboard as a pipeline service: waitress serving the Flask app from its own thread.

Waitress is a production WSGI server in pure Python (no compiler on the device): a
small pool of worker threads behind one non-blocking listener. It runs in a thread of
the appliance's process because the app reads the pipeline's live view and status
directly, from memory.

If the port cannot be bound, the error is logged and the pipeline goes on without a
dashboard: counting and storing events matters more than showing them. For the same
reason the server's threads run at a lower CPU priority than the pipeline's (nice +10:
Linux keeps a nice value per thread, and threads inherit it from the thread that makes
them). With a spare core this changes nothing; when the CPU is short, the dashboard
answers a little later instead of the pipeline dropping frames. `scripts/bench web`
shows both sides: pipeline fps under load, and API latency.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from waitress.server import create_server

from appliance import paths
from appliance.config import Config
from appliance.live import LiveView
from web.analytics import AnalyticsHooks
from web.app import create_app
from web.health import StatusProvider

log = logging.getLogger(__name__)

LOCAL_ONLY_HOST = "127.0.0.1"
THREADS = 6  # enough for a few viewers and API clients; each request is short
NICE_INCREMENT = 10


def _lower_this_threads_priority() -> None:
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + NICE_INCREMENT))
    except OSError as e:  # not fatal: the dashboard then competes with the pipeline as an equal
        log.warning("cannot lower the web server's CPU priority: %s", e)


class WebService:
    name = "web"

    def __init__(self, cfg: Config, status: StatusProvider, data_dir: Path,
                 live: LiveView | None = None, port: int | None = None, *,
                 config_path: Path | None = None, analytics_hooks: AnalyticsHooks | None = None):
        w = cfg.web
        self.password_set = w.password_hash is not None  # its form was checked with the config
        self.host = w.host if self.password_set else LOCAL_ONLY_HOST
        self.port = w.port if port is None else port
        self.app = create_app(cfg, status, paths.db_path(data_dir), live, data_dir=data_dir,
                              config_path=config_path, analytics_hooks=analytics_hooks)
        self._server = None
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    @property
    def url(self) -> str | None:
        if self._server is None:
            return None
        host = self._server.effective_host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self._server.effective_port}/"

    def start(self) -> None:
        ready = threading.Event()

        def serve() -> None:
            # Lowered first, so that the worker threads made by create_server inherit it.
            _lower_this_threads_priority()
            try:
                server = create_server(self.app, host=self.host, port=self.port, threads=THREADS,
                                       ident="appliance", clear_untrusted_proxy_headers=True)
            except OSError as e:
                self.error = f"cannot listen on {self.host}:{self.port}: {e.strerror or e}"
                return
            else:
                self._server = server
            finally:
                ready.set()
            server.run()

        self._thread = threading.Thread(target=serve, name="web", daemon=True)
        self._thread.start()
        ready.wait()
        if self.error:
            log.error("%s; running without the dashboard (set web.port, or --web-port)", self.error)
            return
        if self.password_set:
            log.info("dashboard at %s (login required)", self.url)
        else:
            log.warning("dashboard at %s: no password set, so it listens on %s only and needs "
                        "no login; 'appliance passwd' sets one and opens it to web.host",
                        self.url, LOCAL_ONLY_HOST)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        # Close the listener and every open connection from inside the server's own loop
        # (its trigger runs the function there); the loop ends when no socket is left.
        def close_all() -> None:
            for channel in list(server._map.values()):
                channel.close()

        server.trigger.pull_trigger(close_all)
        if self._thread is not None:
            self._thread.join(timeout=5)
            if self._thread.is_alive():
                log.warning("server thread did not stop within 5 s")
        server.task_dispatcher.shutdown(timeout=2)

    def status(self) -> dict[str, Any]:
        if self.error:
            return {"state": "error", "error": self.error}
        listen = f"{self._server.effective_host}:{self._server.effective_port}" if self._server else None
        return {"state": "serving" if self._server else "stopped", "listen": listen,
                "login": "password" if self.password_set else "none (local only)"}
