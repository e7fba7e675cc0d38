"""The pipeline's fps with the dashboard under load, against without, in one run.

Each round runs the pipeline in fast mode (every frame of the demo video, as fast as the
machine goes) with the dashboard served beside it (waitress, password set):

without load:  nobody uses the dashboard
with load:     20 API clients, each logged in and asking for one of status, events,
               counts and filters in turn, every --interval seconds (1 s by default:
               about twice what an open dashboard asks), and one live-view viewer
               fetching the camera's JPEG every 100 ms with If-None-Match, as the
               dashboard's page does

The pipeline runs the default config's detect.threads (auto unless --threads). The bare
detector (decode excluded) is measured too, at every thread count from 1 to the usable
cores, and the pipeline without load is compared with the best of them, as in
`scripts/bench pipeline`.

Fast mode, because at the camera's native 10 fps the pipeline idles most of the time
and any load would leave fps at 10.0: a ratio of 1.0 that says nothing. In fast mode the
pipeline uses every core it can, so whatever the web server takes shows. The clients
run in a second process on the same machine (they take CPU from the pipeline too, so
the ratio is a pessimistic figure for clients on other machines).
"""
from __future__ import annotations

import argparse
import http.client
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np

from appliance.config import Config
from tests.bench.common import Bare, frames_done, pipeline_threads, setup, thread_count
from web.auth import hash_password

PASSWORD = "bench password"
API_PATHS = ["/api/status", "/api/events?limit=25", "/api/counts?bucket=30", "/api/filters"]


# -- the load (runs in its own process) ----------------------------------------------------

class Client:
    """One keep-alive HTTP connection with the session cookie of one logged-in user."""

    def __init__(self, base: str):
        u = urllib.parse.urlsplit(base)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        self.cookie = ""

    def request(self, method: str, path: str, body: str | None = None,
                headers: dict | None = None) -> tuple[int, bytes, http.client.HTTPResponse]:
        h = {"Cookie": self.cookie, **(headers or {})}
        if body is not None:
            h["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=body, headers=h)
        resp = self.conn.getresponse()
        data = resp.read()
        cookie = resp.getheader("Set-Cookie")
        if cookie:
            self.cookie = cookie.split(";", 1)[0]
        return resp.status, data, resp

    def login(self) -> None:
        _, html, _ = self.request("GET", "/login")
        token = re.search(rb'name="csrf_token" value="([^"]+)"', html).group(1).decode()
        status, _, _ = self.request("POST", "/login",
                                    urllib.parse.urlencode({"password": PASSWORD, "csrf_token": token}))
        if status != 302:
            raise RuntimeError(f"login failed: {status}")


def run_load(base: str, clients: int, interval: float) -> None:
    stop = threading.Event()
    api_lat: list[tuple[str, float]] = []
    errors: list[str] = []
    live = {"new": 0, "not_modified": 0, "lat": []}
    users = [Client(base) for _ in range(clients + 1)]
    for u in users:
        u.login()

    def api_user(i: int, u: Client) -> None:
        n = i  # start at different endpoints
        next_t = time.monotonic() + interval * i / clients  # spread the clients over the interval
        while not stop.is_set():
            time.sleep(max(0.0, next_t - time.monotonic()))
            path = API_PATHS[n % len(API_PATHS)]
            t0 = time.perf_counter()
            try:
                status, _, _ = u.request("GET", path)
                if status != 200:
                    errors.append(f"{path}: {status}")
            except (OSError, http.client.HTTPException) as e:
                errors.append(f"{path}: {e}")
                break
            api_lat.append((path.split("?")[0], time.perf_counter() - t0))
            n += 1
            next_t += interval

    def viewer(u: Client) -> None:
        etag = ""
        while not stop.is_set():
            t0 = time.perf_counter()
            status, _, resp = u.request("GET", "/api/live/demo.jpg", headers={"If-None-Match": etag})
            live["lat"].append(time.perf_counter() - t0)
            if status == 200:
                live["new"] += 1
                etag = resp.getheader("ETag") or ""
            elif status == 304:
                live["not_modified"] += 1
            time.sleep(0.1)

    threads = [threading.Thread(target=api_user, args=(i, u), daemon=True) for i, u in enumerate(users[:-1])]
    threads.append(threading.Thread(target=viewer, args=(users[-1],), daemon=True))
    print("ready", flush=True)
    for t in threads:
        t.start()
    sys.stdin.readline()  # the bench says when to stop
    stop.set()
    for t in threads:
        t.join(timeout=35)
    print(json.dumps({"api": api_lat, "errors": errors[:20], "error_count": len(errors),
                      "live_new": live["new"], "live_304": live["not_modified"], "live_lat": live["lat"]}),
          flush=True)


# -- the bench ----------------------------------------------------------------------------

def pipeline_round(cfg: Config, frames: int, load: list[str] | None) -> tuple[float, dict | None]:
    from appliance.pipeline import Pipeline
    from web.service import WebService

    with tempfile.TemporaryDirectory() as tmp:
        p = Pipeline(cfg, Path(tmp), fast=True, max_frames=frames)
        web = WebService(cfg, p, Path(tmp), p.live, port=0)
        web.start()
        proc = None
        try:
            if load is not None:
                proc = subprocess.Popen([sys.executable, "-m", "tests.bench.bench_web", "--load", web.url, *load],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                if proc.stdout.readline().strip() != "ready":
                    raise RuntimeError("load process did not start")
            t0 = time.perf_counter()
            p.start()
            p.join()
            fps = frames_done(p.status()) / (time.perf_counter() - t0)
            result = None
            if proc is not None:
                out, _ = proc.communicate("stop\n", timeout=60)
                result = json.loads(out.strip().splitlines()[-1])
            return fps, result
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
            web.stop()


def _ms(values, q: float) -> float:
    return 1000.0 * float(np.percentile(values, q)) if len(values) else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench web", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=600, help="frames of vtest.avi per run (default 600)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; best of each kept (default 3)")
    ap.add_argument("--clients", type=int, default=20, help="API clients (default 20)")
    ap.add_argument("--interval", type=float, default=1.0,
                    help="seconds between one client's requests (default 1.0; 0: as fast as possible)")
    ap.add_argument("--threads", type=thread_count,
                    help="the pipeline's inference threads, N or auto (default: the config's)")
    ap.add_argument("--load", metavar="URL", help=argparse.SUPPRESS)  # internal: be the load process
    args = ap.parse_args(argv)
    if args.load:
        run_load(args.load, args.clients, args.interval)
        return 0
    cfg, assets, frames = setup(args)  # the demo config, the asset cache, decoded frames
    _, threads_text = pipeline_threads(cfg, assets)  # auto measures here, first
    cfg.web.password_hash = hash_password(PASSWORD)
    cfg.web.host = "127.0.0.1"
    load_args = ["--clients", str(args.clients), "--interval", str(args.interval)]
    base, loaded, results = [], [], []
    bare = Bare()
    for _ in range(args.rounds):
        bare.measure(cfg, assets, frames)
        base.append(pipeline_round(cfg, args.frames, None)[0])
        fps, result = pipeline_round(cfg, args.frames, load_args)
        loaded.append(fps)
        results.append(result)
    b, w = max(base), max(loaded)
    api = [lat for r in results for _, lat in r["api"]]
    by_path: dict[str, list[float]] = {}
    for r in results:
        for path, lat in r["api"]:
            by_path.setdefault(path, []).append(lat)
    live_lat = [x for r in results for x in r["live_lat"]]
    rate = "as fast as it can" if args.interval == 0 else f"one request every {args.interval:g} s"
    print(f"frames: {args.frames} of vtest.avi per run, fast mode, detect.threads {threads_text}")
    print(f"load: {args.clients} API clients ({rate} each, logged in, keep-alive) + 1 live viewer (every 100 ms)")
    print(f"pipeline fps without load: {b:7.1f}   rounds: {', '.join(f'{x:.1f}' for x in base)}")
    print(f"pipeline fps with load:    {w:7.1f}   rounds: {', '.join(f'{x:.1f}' for x in loaded)}")
    print(f"ratio with/without: {w / b:.3f}   (target >= 0.90)")
    for line in bare.lines():
        print(line)
    print(f"ratio without load/best bare ({bare.best_threads} thread(s)): {b / bare.best:.3f}   "
          f"with load/best bare: {w / bare.best:.3f}")
    print(f"API latency: p50 {_ms(api, 50):.1f} ms, p95 {_ms(api, 95):.1f} ms, max {_ms(api, 100):.1f} ms "
          f"over {len(api)} requests, errors {sum(r['error_count'] for r in results)}")
    print("  p95 by endpoint: " + ", ".join(f"{p} {_ms(v, 95):.1f} ms" for p, v in sorted(by_path.items())))
    print(f"live viewer: {sum(r['live_new'] for r in results)} new pictures, "
          f"{sum(r['live_304'] for r in results)} not modified (304), p95 {_ms(live_lat, 95):.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
