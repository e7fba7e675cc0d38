"""The dashboard of a real `appliance run` on the demo video, in a real headless Chromium.

One appliance (real model, real video at its native 10 fps, looping) serves the whole
module on a free port, with a password set by `appliance passwd`. Screenshots go to
test-artifacts/ (git-ignored) for a person to look at.
"""
from __future__ import annotations

import http.cookiejar
import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from tests.dashboard_util import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    PASSWORD,
    appliance_env,
    running_dashboard,
    set_password,
)


@pytest.fixture(scope="module")
def appliance_url(tmp_path_factory, assets_dir):
    tmp = tmp_path_factory.mktemp("web")
    cfg = tmp / "config.yaml"
    cfg.write_text("device: {id: gate-3}\n"
                   "cameras:\n  - {id: demo, source: 'asset:vtest.avi', loop: true}\n"
                   "web: {host: 127.0.0.1}\n")
    env = appliance_env(assets_dir)
    set_password(cfg, env)
    with running_dashboard(cfg, tmp / "data", env) as (url, lines):
        deadline = time.monotonic() + 60
        while not re.search(r'appliance_frames_total\{camera="demo"\} [1-9]\d', _open(url + "metrics")[2].decode()):
            assert time.monotonic() < deadline, "no frames:\n" + "".join(lines)
            time.sleep(0.5)  # until the pipeline has been through some frames
        yield url


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _open(url: str, opener=None, data: dict | None = None):
    """(status, headers, body) without following redirects; HTTP errors are answers too."""
    opener = opener or urllib.request.build_opener(_NoRedirect)
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    try:
        with opener.open(url, data=body, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def _logged_in_opener(base: str):
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(_NoRedirect, urllib.request.HTTPCookieProcessor(jar))
    _, _, html = _open(base + "login", opener)
    token = re.search(rb'name="csrf_token" value="([^"]+)"', html).group(1).decode()
    status, _, _ = _open(base + "login", opener, {"password": PASSWORD, "csrf_token": token})
    assert status == 302
    return opener


def test_unauthenticated_requests_get_a_redirect_or_401(appliance_url):
    status, headers, _ = _open(appliance_url)
    assert status == 302 and "/login" in headers["Location"]
    status, _, body = _open(appliance_url + "api/events")
    assert status == 401 and json.loads(body) == {"error": "login required"}
    status, _, body = _open(appliance_url + "healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"


def test_a_bad_parameter_gets_a_400_with_a_message(appliance_url):
    opener = _logged_in_opener(appliance_url)
    status, _, body = _open(appliance_url + "api/events?limit=lots", opener)
    assert status == 400 and json.loads(body)["error"] == "limit: expected an integer, got 'lots'"
    status, _, body = _open(appliance_url + "api/events?limit=5", opener)
    assert status == 200 and len(json.loads(body)["events"]) <= 5


def test_metrics_pass_promtool(appliance_url, tmp_path):
    assert shutil.which("promtool"), "promtool missing: scripts/setup --test installs Debian's prometheus"
    status, headers, body = _open(appliance_url + "metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    for name in ("appliance_decode_seconds_bucket", "appliance_inference_seconds_bucket",
                 "appliance_tracking_seconds_bucket", "appliance_store_write_seconds_bucket",
                 'appliance_fps{camera="demo"}', 'appliance_frames_dropped_total{camera="demo"}',
                 'appliance_queue_depth{queue="store"}', "appliance_events_total",
                 "appliance_web_requests_total", "appliance_data_disk_free_bytes"):
        assert name in text, name
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", r.stdout + r.stderr


# JavaScript run in the page.
_IMAGE_SUM = """img => { const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data; let s = 0;
  for (let i = 0; i < d.length; i += 97) s += d[i]; return s; }"""
_TOP_SEQ = "() => { const r = document.querySelector('#events-rows tr[data-seq]'); return r ? +r.dataset.seq : 0; }"
_CHART_HAS_DATA = """() => { const c = window.Chart && Chart.getChart('counts-chart');
  return !!c && c.data.datasets.some(d => d.data.some(v => v > 0)); }"""
# Pixels of the canvas in the colour of a non-empty series: the bars were drawn, not just axes.
_BAR_PIXELS = """() => { const chart = Chart.getChart('counts-chart'), cv = chart.canvas;
  const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
  const want = chart.data.datasets.filter(s => s.data.some(v => v > 0)).map(s => s.backgroundColor)
    .map(h => [parseInt(h.slice(1, 3), 16), parseInt(h.slice(3, 5), 16), parseInt(h.slice(5, 7), 16)]);
  let n = 0;
  for (let i = 0; i < d.length; i += 4)
    if (want.some(([r, g, b]) => d[i] === r && d[i + 1] === g && d[i + 2] === b && d[i + 3] === 255)) n++;
  return n; }"""


def _login_in_browser(page, base: str) -> None:
    page.goto(base)
    assert "/login" in page.url
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base)


def test_dashboard_in_a_real_browser(appliance_url):
    assert Path(CHROMIUM).exists(), "no /usr/bin/chromium: scripts/setup --test installs Debian's chromium"
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.set_default_timeout(30_000)
            _login_in_browser(page, appliance_url)

            # The live picture arrives, and changes.
            img = page.locator("img.live-img[data-camera=demo]")
            page.wait_for_function("() => +document.querySelector('img.live-img').dataset.frame >= 0 && "
                                   "document.querySelector('img.live-img').naturalWidth === 768")
            frame1, sum1 = img.get_attribute("data-frame"), img.evaluate(_IMAGE_SUM)
            page.wait_for_function("f => document.querySelector('img.live-img').dataset.frame !== f", arg=frame1)
            page.wait_for_function("s => { const i = document.querySelector('img.live-img'); "
                                   f"return i.complete && i.naturalWidth > 0 && ({_IMAGE_SUM})(i) !== s; }}",
                                   arg=sum1)

            # Event rows appear, and newer ones keep coming.
            page.wait_for_selector("#events-rows tr[data-seq]")
            first_top = page.evaluate(_TOP_SEQ)
            page.wait_for_function(f"() => ({_TOP_SEQ})() > {first_top}")
            assert page.locator("#events-rows tr[data-seq]").count() >= 1
            assert "demo" in page.locator("#events-rows tr[data-seq]").first.inner_text()

            # The counts chart draws bars.
            page.wait_for_function(_CHART_HAS_DATA)
            page.wait_for_function(f"() => ({_BAR_PIXELS})() > 50")  # drawn once any animation is done

            # The health panel shows the camera running, and its measured rate. (How fast a
            # shared machine runs is no test's business; realtime pacing is tested with a fake
            # clock in tests/unit/test_capture.py.)
            page.wait_for_function("() => document.querySelector('#health-pill').textContent === 'running'")
            page.wait_for_function(
                "() => +document.querySelector('#health-cameras td[data-label=fps]')?.textContent > 0")
            assert re.fullmatch(r"\d+\.\d", page.locator("#health-cameras td[data-label=fps]").inner_text())
            device = page.locator("#health-device").inner_text().lower()
            for tile in ("uplink", "power & temperature", "disk", "% used", "uptime", "model",
                         "ssd-mobilenet-v2", "thread(s)", "classifier", "efficientnet-lite0-vehicle",
                         "events stored"):
                assert tile in device, tile

            # Filters: a label with no events empties the table; clearing brings rows back.
            page.select_option("#event-filters select[name=type]", "end")
            page.click("#event-filters button[type=submit]")
            page.wait_for_function("() => [...document.querySelectorAll('#events-rows tr[data-seq] td:nth-child(3)')]"
                                   ".every(td => td.textContent === 'end')")
            page.wait_for_timeout(2500)  # let the next refresh of the live view and chart land
            page.screenshot(path=str(ARTIFACTS / "dashboard-desktop.png"), full_page=True)

            # A phone: nothing wider than the screen, the table readable without sideways scrolling.
            phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                     is_mobile=True, has_touch=True)
            phone.on("pageerror", lambda e: problems.append(str(e)))
            phone.set_default_timeout(30_000)
            _login_in_browser(phone, appliance_url)
            phone.wait_for_selector("#events-rows tr[data-seq]")
            phone.wait_for_function(_CHART_HAS_DATA)
            phone.wait_for_timeout(1500)
            phone.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)
            assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            widths = phone.evaluate("() => { const t = document.querySelector('table.events');"
                                    " return [t.scrollWidth, t.parentElement.clientWidth]; }")
            assert widths[0] <= widths[1], widths
        finally:
            browser.close()
    assert problems == []  # no script errors, no refused resource (CSP)


# -- the classifier's types, on a dashboard over a seeded database ------------------------
#
# Whether the pipeline classifies yet or not, these events carry types: they are written
# by the real writer into a fresh database, and the real app (create_app, served by
# waitress as in the appliance) shows them to the real Chromium.

_TYPES = ["car", "suv", "pickup", "van", "car", "bus", "pickup", "car", None, None]  # None: a person


def _seed_typed_events(db_path: Path, now: float) -> dict[str, int]:
    """40 tracks over the last 10 minutes: new, update (typed from the second update on),
    end. Returns the number of events per type."""
    from appliance.events.lifecycle import Event
    from appliance.store.writer import EventWriter

    events, per_type, seq = [], {}, 0
    for track in range(1, 41):
        cls = _TYPES[track % len(_TYPES)]
        t0 = now - 600 + track * 14
        for k, kind in enumerate(["new", "update", "update", "end"]):
            seq += 1
            c = None
            if cls and k >= 2:
                c = {"label": cls, "score": round(0.6 + track % 4 * 0.1, 2), "votes": k, "attempts": k + 1,
                     "model": "efficientnet-lite0", "version": "test"}
                per_type[cls] = per_type.get(cls, 0) + 1
            events.append(Event(id=f"gate-3:{seq}", seq=seq, type=kind, device="gate-3", camera="demo",
                                track_id=track, label="car" if cls else "person", score=0.77,
                                box=[10.0, 20.0, 110.0, 90.0], ts=t0 + k * 3, first_seen=t0, frame_seq=seq,
                                classification=c))
    w = EventWriter(db_path).start()
    w.put(events)
    assert w.close() == 0
    return per_type


def _live_with_a_typed_car(labels):
    import numpy as np

    from appliance.capture.frame import Frame
    from appliance.detect.types import Detections
    from appliance.live import LiveView
    from appliance.result import FrameResult
    from appliance.track.sort import Track

    img = np.full((576, 768, 3), (70, 80, 90), np.uint8)
    img[380:] = (60, 60, 60)  # a road
    live = LiveView(labels)
    live.update(FrameResult(
        Frame(img, "demo", 1, 0.0, time.time()), Detections.empty(),
        tracks=[Track(12, np.array([120.0, 300.0, 420.0, 460.0]), 0.9, 2, 9, 9, 9, 0, True),
                Track(13, np.array([520.0, 220.0, 600.0, 470.0]), 0.8, 0, 9, 9, 9, 0, True)],
        attributes={12: {"classification": {"label": "pickup", "score": 0.82}}}))
    return live


class _Status:
    def status(self):
        return {"running": True, "heartbeat_age_s": 0.1, "uptime_s": 60.0, "events_stored": 160,
                "model": {"name": "ssd-mobilenet-v2-coco", "version": "t", "backend": "litert", "device": "cpu"},
                "queue_depth": {"detect_to_track": 0, "store": 0},
                "cameras": {"demo": {"fps": 10.0, "inference_ms_p50": 20.0, "inference_ms_p95": 25.0,
                                     "frames": 600, "dropped": 0, "corrupt": 0, "live_tracks": 2,
                                     "queue_depth": {"capture": 0}}},
                "services": {}}


@pytest.fixture
def typed_dashboard(tmp_path):
    from appliance import paths
    from appliance.config import Config
    from web.service import WebService

    cfg = Config()
    cfg.device.id = "gate-3"
    data = tmp_path / "data"
    data.mkdir()
    per_type = _seed_typed_events(paths.db_path(data), time.time())
    web = WebService(cfg, _Status(), data, _live_with_a_typed_car(cfg.detect.classes), port=0)
    web.start()
    assert web.url, web.error
    try:
        yield web.url, per_type
    finally:
        web.stop()


_TYPE_CELLS = ("() => [...document.querySelectorAll('#events-rows tr[data-seq] td:nth-child(6)')]"
               ".map(td => td.textContent)")
_CHART_SERIES = ("() => { const c = window.Chart && Chart.getChart('counts-chart');"
                 " return c ? c.data.datasets.map(d => d.label) : []; }")


def test_types_in_the_events_table_filter_and_chart(typed_dashboard):
    url, per_type = typed_dashboard
    assert Path(CHROMIUM).exists(), "no /usr/bin/chromium: scripts/setup --test installs Debian's chromium"
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.set_default_timeout(30_000)
            page.goto(url)  # no password: local only, no login

            # The Type column: the newest event (track 40's end) is typed, a person's is "–".
            page.wait_for_selector("#events-rows tr[data-seq]")
            assert page.locator("table.events th").nth(5).inner_text().lower() == "type"
            cells = page.evaluate(_TYPE_CELLS)
            assert len(cells) == 25 and cells[0] == "car 0.60", cells  # track 40: _TYPES[0], 0.6 + 0 * 0.1
            assert "–" in cells and any(c.startswith("pickup ") for c in cells)

            # The type filter: the classifier's types are offered; picking one leaves only its events.
            options = page.locator("#event-filters select[name=classification] option").all_inner_texts()
            assert options[:4] == ["all", "car", "suv", "pickup"] and "emergency" in options
            page.select_option("#event-filters select[name=classification]", "pickup")
            page.click("#event-filters button[type=submit]")
            page.wait_for_function(f"() => {{ const c = ({_TYPE_CELLS})(); return c.length === "
                                   f"{per_type['pickup']} && c.every(t => t.startsWith('pickup ')); }}")
            assert page.locator("#events-rows tr[data-seq] td:nth-child(6)").first.get_attribute("title") == \
                "score 0.60 · 3 of 4 votes · efficientnet-lite0 test"

            # The chart by type: one series per type, no persons.
            page.select_option("#counts-by", "classification")
            page.wait_for_function(f"() => ({_CHART_SERIES})().join() === 'bus,car,pickup,suv,van'")
            assert page.locator("#counts-title").inner_text() == "Objects seen by type"
            assert "under its latest type" in page.locator("#counts-note").inner_text()
            page.wait_for_function(f"() => ({_BAR_PIXELS})() > 50")
            # And back by class: the detector's labels.
            page.select_option("#counts-by", "label")
            page.wait_for_function(f"() => ({_CHART_SERIES})().join() === 'car,person'")
            page.select_option("#counts-by", "classification")
            page.wait_for_function(f"() => ({_CHART_SERIES})().join() === 'bus,car,pickup,suv,van'")

            # The live picture with its typed caption (drawn by the server; see test_live_view.py).
            page.wait_for_function("() => document.querySelector('img.live-img').naturalWidth === 768")
            page.wait_for_timeout(500)
            page.screenshot(path=str(ARTIFACTS / "dashboard-types-desktop.png"), full_page=True)

            phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                     is_mobile=True, has_touch=True)
            phone.on("pageerror", lambda e: problems.append(str(e)))
            phone.set_default_timeout(30_000)
            phone.goto(url)
            phone.wait_for_selector("#events-rows tr[data-seq]")
            phone.select_option("#counts-by", "classification")
            phone.wait_for_function(f"() => ({_CHART_SERIES})().length === 5")
            phone.wait_for_timeout(800)
            phone.screenshot(path=str(ARTIFACTS / "dashboard-types-phone.png"), full_page=True)
            assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            widths = phone.evaluate("() => { const t = document.querySelector('table.events');"
                                    " return [t.scrollWidth, t.parentElement.clientWidth]; }")
            assert widths[0] <= widths[1], widths
        finally:
            browser.close()
    assert problems == []
