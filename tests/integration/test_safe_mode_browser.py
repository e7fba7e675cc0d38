"""The safe-mode page in real headless Chromium at a phone's size: the errors readable, the
editor as wide as the screen, and Validate, Save and Restart working end to end against a
real `appliance run` in safe mode (no script on the page: plain forms, under the CSP)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from appliance.safemode import EXIT_RESTART
from tests.dashboard_util import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.mqtt_broker import free_port

BROKEN = "device: {id: gate-3}\ndetect:\n  threshold: 7\n"


def _wait_http(port: int, proc: subprocess.Popen, log: Path) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)


def test_fix_the_config_from_a_phone(data_dir, tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(BROKEN)
    port, log = free_port(), tmp_path / "safe.log"
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "run", "--config", str(cfg), "--data-dir",
                             str(data_dir), "--safe-mode", "on", "--web-port", str(port)],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=os.environ.copy())
    console: list[str] = []
    try:
        _wait_http(port, proc, log)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            phone = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True,
                     "has_touch": True}
            # The picture first, on a page of its own: after a full-page screenshot of an emulated
            # phone, clicks on that page land on the wrong element.
            ARTIFACTS.mkdir(exist_ok=True)
            shot = browser.new_page(**phone)
            shot.goto(f"http://127.0.0.1:{port}/safe-mode")
            shot.screenshot(path=str(ARTIFACTS / "safe-mode-phone.png"), full_page=True)
            shot.close()
            page = browser.new_page(**phone)
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.goto(f"http://127.0.0.1:{port}/")  # any page leads to the editor
            assert page.url.endswith("/safe-mode")
            errors = page.locator("#boot-errors li").all_inner_texts()
            assert errors == [f"{cfg}: detect.threshold: must be between 0.0 and 1.0, got 7"]
            box = page.locator("#config").bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390  # the editor fits the screen
            assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling

            page.fill("#config", BROKEN.replace("threshold: 7", "threshold: 0.55"))
            page.click("button[value=validate]")
            assert page.locator("#result h2").inner_text() == "Valid"
            assert cfg.read_text() == BROKEN
            page.click("button[value=save]")
            assert page.locator("#result h2").inner_text() == "Saved"
            assert page.evaluate("document.documentElement.scrollWidth") <= 390  # long paths wrap too
            assert "threshold: 0.55" in cfg.read_text()
            page.click("#restart button")
            assert page.locator("#restarting h1").inner_text() == "Restarting"
            browser.close()
        assert proc.wait(30) == EXIT_RESTART, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not [m for m in console if m.startswith("error")], console  # nothing the CSP blocked
