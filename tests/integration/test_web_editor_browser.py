"""The line and zone editor in a real headless Chromium, on a real `appliance run`.

The appliance runs the real model on the demo video (native 10 fps, looping) with a config
file that has comments and no lines, and a password set by `appliance passwd`. In the
browser: log in, draw a line across the walkway with the mouse, name it, save; then see it
counted on the page, find its events in SQLite and its rows in the counts chart, and find
it in the config file with the file's comments kept. Then the editor's refusals: a zone
that crosses itself and a duplicate name are shown with the config's message, and leave
the file as it was. Screenshots go to test-artifacts/.
"""
from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from appliance import config
from tests.dashboard_util import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    PASSWORD,
    appliance_env,
    running_dashboard,
    set_password,
)

W, H = 768, 576  # vtest.avi

SITE = """\
# Gate 3: the walkway (browser test)
device: {id: gate-3}   # printed on the box
cameras:
  - id: demo           # the walkway camera
    source: 'asset:vtest.avi'
    loop: true
web:
  host: 127.0.0.1  # tests only
"""

# Across the walkway, left of the lamp post: people walk left and right through it.
LINE = ((0.40, 0.27), (0.40, 0.62))


@pytest.fixture(scope="module")
def appliance(tmp_path_factory, assets_dir):
    tmp = tmp_path_factory.mktemp("editor")
    cfg = tmp / "config.yaml"
    cfg.write_text(SITE)
    env = appliance_env(assets_dir)
    set_password(cfg, env)
    data = tmp / "data"
    with running_dashboard(cfg, data, env) as (url, lines):
        yield url, cfg, data / "appliance.db", lines


def _login(page, base: str) -> None:
    page.goto(base)
    assert "/login" in page.url
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base)


def _at(page, fx: float, fy: float) -> tuple[float, float]:
    """The page position of a point of the frame given in fractions (the picture is fitted
    into its box like object-fit: contain)."""
    box = page.locator("img.live-img[data-camera=demo]").bounding_box()
    scale = min(box["width"] / W, box["height"] / H)
    ox, oy = box["x"] + (box["width"] - W * scale) / 2, box["y"] + (box["height"] - H * scale) / 2
    return ox + fx * W * scale, oy + fy * H * scale


def _line_events(db: Path) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT json_extract(payload, '$.line'), json_extract(payload, '$.direction') "
                            "FROM events WHERE type = 'line'").fetchall()
    finally:
        conn.close()


_COUNTED = """() => { const li = document.querySelector('li[data-line="walkway"]');
  return !!li && (+li.dataset.in + +li.dataset.out) > 0; }"""
_CHART_SERIES = ("() => { const c = window.Chart && Chart.getChart('counts-chart');"
                 " return c ? c.data.datasets.filter(d => d.data.some(v => v > 0)).map(d => d.label) : []; }")


def test_draw_a_line_save_it_and_see_it_counted(appliance):
    url, cfg_path, db, log_lines = appliance
    assert Path(CHROMIUM).exists(), "no /usr/bin/chromium: scripts/setup --test installs Debian's chromium"
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []
    expected_refusals = re.compile(r"status of (400)")  # the refused saves below, logged by Chromium
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("console", lambda m: problems.append(m.text)
                    if m.type == "error" and not expected_refusals.search(m.text) else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.set_default_timeout(30_000)
            _login(page, url)

            # The overlay knows the frame, and the editor can be opened.
            page.wait_for_function("() => document.querySelector('svg[data-overlay=demo]')"
                                   f".getAttribute('viewBox') === '0 0 {W} {H}'")
            toggle = page.locator("button[data-edit=demo]")
            page.wait_for_function("() => { const b = document.querySelector('button[data-edit=demo]');"
                                   " return !b.hidden && !b.disabled; }")
            toggle.click()
            bar = page.locator("[data-editor=demo]")
            assert bar.is_visible()

            # Draw the line: a drag across the walkway.
            bar.locator("button[data-mode=line]").click()
            (x1, y1), (x2, y2) = _at(page, *LINE[0]), _at(page, *LINE[1])
            page.mouse.move(x1, y1)
            page.mouse.down()
            page.mouse.move(x2, y2, steps=12)
            page.mouse.up()
            name = bar.locator("input[name=shape-name]")
            assert name.input_value() == "line-1"
            assert page.locator("svg[data-overlay=demo] g.shape.line").count() == 1
            name.fill("walkway")
            page.screenshot(path=str(ARTIFACTS / "editor-drawn.png"), full_page=True)
            bar.locator("button[data-action=save]").click()
            note = page.locator("figure[data-analytics-camera=demo] .saved-note")
            note.wait_for(state="visible")
            assert note.inner_text() == f"Saved to {cfg_path} and applied."
            assert not bar.is_visible()

            # The file: the line, in fractions, and every comment and line of the file as it was.
            text = cfg_path.read_text()
            for line in SITE.splitlines():
                assert line in text, line
            saved = config.load(cfg_path).cameras[0].lines
            assert [ln.name for ln in saved] == ["walkway"]
            for got, want in zip(saved[0].points, LINE):
                assert got == pytest.approx(want, abs=0.01)

            # Counted: on the page (the live counts and the overlay's label), in SQLite, in the chart.
            page.wait_for_function(_COUNTED, timeout=150_000)
            label = page.locator("svg[data-overlay=demo] g.shape.line[data-name=walkway] text.label").text_content()
            assert re.fullmatch(r"walkway: in \d+ · out \d+", label), label
            assert re.search(r"in \d+ · out \d+", page.locator("li[data-line=walkway]").inner_text())
            deadline = time.monotonic() + 30
            while not _line_events(db):  # the writer commits in batches
                assert time.monotonic() < deadline, "no line events in SQLite"
                time.sleep(0.5)
            assert {name for name, _ in _line_events(db)} == {"walkway"}
            assert {d for _, d in _line_events(db)} <= {"in", "out"}
            page.select_option("#counts-by", "line")
            page.wait_for_function(f"() => ({_CHART_SERIES})().some(s => /^walkway (in|out)$/.test(s))")
            assert page.locator("#counts-title").inner_text() == "Line crossings"
            page.wait_for_timeout(1500)
            page.screenshot(path=str(ARTIFACTS / "editor-counted.png"), full_page=True)

            # A zone drawn by clicking its corners (the first again closes it), then a corner
            # dragged across so it crosses itself: refused with the config's message.
            good = cfg_path.read_bytes()
            toggle.click()
            bar.locator("button[data-mode=zone]").click()
            corners = [(0.55, 0.70), (0.85, 0.70), (0.85, 0.90), (0.55, 0.90)]
            for fx, fy in [*corners, corners[0]]:
                page.mouse.click(*_at(page, fx, fy))
            assert page.locator("svg[data-overlay=demo] g.shape.zone").count() == 1
            assert name.input_value() == "zone-1"
            page.mouse.move(*_at(page, 0.85, 0.90))  # drag the third corner over the first edge
            page.mouse.down()
            page.mouse.move(*_at(page, 0.70, 0.60), steps=8)
            page.mouse.up()
            bar.locator("button[data-action=save]").click()
            msg = bar.locator(".editor-msg.error")
            msg.wait_for(state="visible")
            assert "Not saved (400)" in msg.inner_text()
            assert re.search(r"cameras\[0\]\.zones\[0\]\.points: the polygon crosses itself", msg.inner_text())
            assert cfg_path.read_bytes() == good

            # Moved back; but named like the line: refused too.
            page.mouse.move(*_at(page, 0.70, 0.60))
            page.mouse.down()
            page.mouse.move(*_at(page, 0.85, 0.90), steps=8)
            page.mouse.up()
            name.fill("walkway")
            bar.locator("button[data-action=save]").click()
            page.wait_for_function("() => /duplicate name 'walkway'/.test("
                                   "document.querySelector('[data-editor=demo] .editor-msg').textContent)")
            assert cfg_path.read_bytes() == good
            page.screenshot(path=str(ARTIFACTS / "editor-refused.png"), full_page=True)

            # Named properly: saved, and both are in the file and on the page.
            name.fill("plaza")
            bar.locator("button[data-action=save]").click()
            page.wait_for_selector("li[data-zone=plaza]")
            zones = config.load(cfg_path).cameras[0].zones
            assert [z.name for z in zones] == ["plaza"] and len(zones[0].points) == 4
            assert [ln.name for ln in config.load(cfg_path).cameras[0].lines] == ["walkway"]

            # Deleted again: select it, Delete, Save.
            toggle.click()
            page.mouse.click(*_at(page, 0.70, 0.80))  # inside the zone
            assert name.input_value() == "plaza"
            bar.locator("button[data-action=delete]").click()
            bar.locator("button[data-action=save]").click()
            page.wait_for_function("() => !document.querySelector('li[data-zone=plaza]')")
            assert config.load(cfg_path).cameras[0].zones == []
            assert "# printed on the box" in cfg_path.read_text()

            # A polyline by clicks (a double-click ends it), moved as a whole, deleted with the
            # Delete key, and the editor left with Cancel: the file stays as saved.
            saved_text = cfg_path.read_bytes()
            toggle.click()
            bar.locator("button[data-mode=line]").click()
            page.mouse.click(*_at(page, 0.10, 0.10))
            page.mouse.click(*_at(page, 0.20, 0.10))
            page.mouse.dblclick(*_at(page, 0.25, 0.20))
            handles = page.locator('svg[data-overlay=demo] g.shape.line[data-name="line-1"] circle.handle')
            assert handles.count() == 3
            page.mouse.move(*_at(page, 0.15, 0.10))  # the middle of the first segment: the whole line
            page.mouse.down()
            page.mouse.move(*_at(page, 0.15, 0.20), steps=6)
            page.mouse.up()
            assert float(handles.first.get_attribute("cy")) == pytest.approx(0.20 * H, abs=3)
            assert float(handles.nth(2).get_attribute("cy")) == pytest.approx(0.30 * H, abs=3)
            page.keyboard.press("Delete")
            assert handles.count() == 0
            page.once("dialog", lambda d: d.accept())  # "Discard the changes that are not saved?"
            bar.locator("button[data-action=cancel]").click()
            assert not bar.is_visible()
            assert page.locator("svg[data-overlay=demo] g.shape").count() == 1  # the saved line
            assert cfg_path.read_bytes() == saved_text
        finally:
            browser.close()
    assert problems == []
    assert not any("Traceback" in line for line in log_lines), "".join(log_lines)
