"""The dashboard's self-test page: login and the CSRF token for the run button (Flask's test
client), then a real `appliance run` (demo video, real model, a password) driven from a real
headless Chromium at a phone's size: run the self-test, see every check with its mark."""
from __future__ import annotations

import json
import re
from pathlib import Path

from appliance.config import Config, WebConfig
from appliance.selftest import report as report_mod
from appliance.selftest.report import Check, Report
from tests.dashboard_util import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    PASSWORD,
    appliance_env,
    running_dashboard,
    set_password,
)
from web.app import create_app
from web.auth import hash_password


class _Status:
    def status(self):
        return {"running": True, "heartbeat_age_s": 0.1, "cameras": {}}


def _app(data_dir: Path):
    cfg = Config()
    cfg.device.id = "gate-3"
    cfg.web = WebConfig(password_hash=hash_password(PASSWORD))
    app = create_app(cfg, _Status(), data_dir / "appliance.db", data_dir=data_dir)
    app.config["TESTING"] = True
    return app


def _csrf(client, path: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True)).group(1)


def test_page_needs_login_and_the_run_button_a_csrf_token(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    report_mod.save(Report("gate-3", "0.1.0", "/etc/appliance/config.yaml", checks=[
        Check("mode", "pass", "normal"),
        Check("uplink", "fail", "broker:8883 (TLS, user gate-3): unreachable", "check uplink.host")]), data)
    c = _app(data).test_client()
    r = c.get("/selftest")
    assert r.status_code == 302 and "/login" in r.headers["Location"]
    app = c.application
    assert c.post("/selftest/run").status_code == 400  # the CSRF check comes first; then the login
    assert not app.extensions["appliance_selftest"].running
    assert c.get("/api/selftest").status_code == 401
    assert c.post("/login", data={"password": PASSWORD, "csrf_token": _csrf(c, "/login")}).status_code == 302
    html = c.get("/selftest").get_data(as_text=True)
    assert 'id="selftest-state">FAILED' in html
    assert re.search(r'data-check="uplink">\s*<span class="mark" aria-label="fail">✗', html)
    assert "check uplink.host" in html and "config /etc/appliance/config.yaml" in html
    r = c.post("/selftest/run")  # logged in, but no token
    assert r.status_code == 400 and "CSRF" in r.get_data(as_text=True)
    assert c.get("/api/selftest").get_json()["running"] is False
    body = c.get("/api/selftest").get_json()
    assert body["report"]["checks"][1]["name"] == "uplink" and body["report"]["ok"] is False


def test_run_from_a_phone_in_a_real_browser(tmp_path, assets_dir):
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "no /usr/bin/chromium: scripts/setup --test installs Debian's chromium"
    cfg = tmp_path / "config.yaml"
    cfg.write_text("device: {id: gate-3}\ncameras:\n  - {id: demo, source: 'asset:vtest.avi', loop: true}\n"
                   "web: {host: 127.0.0.1}\n")
    env = appliance_env(assets_dir)
    set_password(cfg, env)
    data = tmp_path / "data"
    problems: list[str] = []
    with running_dashboard(cfg, data, env) as (base, _):
        ARTIFACTS.mkdir(exist_ok=True)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                         is_mobile=True, has_touch=True)
                phone.on("pageerror", lambda e: problems.append(str(e)))
                phone.set_default_timeout(120_000)
                phone.goto(base + "selftest")
                phone.fill("#password", PASSWORD)
                phone.click("button[type=submit]")
                phone.wait_for_url(base + "selftest")
                assert phone.inner_text("#selftest-state") == "not run yet"
                phone.click("#run-selftest")
                phone.wait_for_selector("li.check[data-check=dashboard]")  # the page reloads itself until done
                phone.screenshot(path=str(ARTIFACTS / "selftest-phone.png"), full_page=True)
                assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
                marks = {el.get_attribute("data-check"): el.get_attribute("class").split()[1]
                         for el in phone.query_selector_all("li.check")}
                dashboard_text = phone.inner_text("li.check[data-check=dashboard]")
            finally:
                browser.close()
    assert not problems, problems
    assert marks["mode"] == marks["config"] == marks["camera:demo"] == marks["classifier"] == "pass", marks
    assert marks["detector"] in ("pass", "warn")  # warn: slower than expected beside the running pipeline
    assert marks["dashboard"] == "pass", dashboard_text  # a password is set: no warning
    assert "answers on port" in dashboard_text
    kept = json.loads((data / "selftest.json").read_text())
    assert kept["config"] == str(cfg) and [c["name"] for c in kept["checks"]] == list(marks)
