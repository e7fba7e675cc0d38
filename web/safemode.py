"""The dashboard in safe mode (appliance/safemode.py): the errors, and an editor for the config.

`install(app, state)` turns an app made by create_app() into the safe-mode dashboard:
every page leads to /safe-mode, the JSON API answers 503 (there is no pipeline behind it)
except /api/safe-mode, and /healthz answers 503 "safe mode". The login is the normal one
(web/auth.py), so only a logged-in installer can read or change the config.

/safe-mode shows the validation errors the appliance started with and the config file's
text. The installer edits it, then:
- Validate: checks the text as `appliance run` would (the files it names included) and
  shows every problem, one per line, or "valid";
- Save: the same check, then the file is replaced atomically, the previous one kept as
  `<name>.bak` (appliance/config/replace.py); an invalid text is never saved;
- Restart: the appliance exits with status 75, and systemd starts it again with the file
  as it is now.
"""
from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from pathlib import Path

from flask import Blueprint, Flask, current_app, jsonify, redirect, render_template, request, url_for

from appliance import __version__
from appliance import config as config_mod
from appliance.errors import ApplianceError
from appliance.safemode import SafeMode

log = logging.getLogger(__name__)
bp = Blueprint("safemode", __name__)

MAX_CONFIG_BYTES = 256 * 1024  # a real config is a few KiB
# Reachable in safe mode besides the blueprint: the login, monitoring and static files.
_ALLOWED = {"auth.login", "auth.logout", "healthz", "metrics", "static"}


def _state() -> SafeMode:
    return current_app.extensions["appliance_safe_mode"]


def _validate(text: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) of a config text, checked as `appliance run` checks its file."""
    state = _state()
    origin = state.config_path or "config"
    warnings: list[str] = []
    try:
        config_mod.from_text(text, origin, assets_dir=current_app.extensions["appliance_assets_dir"],
                             warnings=warnings)
    except ApplianceError as e:
        return str(e).splitlines(), warnings
    return [], warnings


def _file_text() -> tuple[str, str | None]:
    """The config file's text now, and why it could not be read (None when it could)."""
    path = _state().config_path
    if path is None:
        return "", "no config file was given (--config): the built-in config is always valid"
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace"), None
    except OSError as e:
        return "", f"cannot read {path}: {e.strerror or e}"


def _unwritable() -> str | None:
    """Why the appliance cannot replace its config file, or None when it can."""
    path = _state().config_path
    if path is None:
        return "no config file was given (--config)"
    folder = os.path.dirname(os.path.abspath(path))
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        return (f"the appliance may not write {path} (a read-only file system, or the service's sandbox: "
                "docs/installer-guide.md, \"Safe mode\"); validate here, put the text into the file over SSH "
                "(sudo), then restart")
    return None


def _page(text: str | None, *, result: dict | None = None, status: int = 200):
    state = _state()
    file_text, read_error = _file_text()
    return render_template(
        "safemode.html", state=state, version=__version__, text=file_text if text is None else text,
        read_error=read_error, unwritable=_unwritable(), result=result,
        local_only=not current_app.config["APPLIANCE_PASSWORD_HASH"],
        since=datetime.fromtimestamp(state.since, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        source=current_app.extensions["appliance_safe_mode_source"]), status


@bp.get("/safe-mode")
def page():
    return _page(None)


@bp.post("/safe-mode")
def edit():
    text = request.form.get("config", "").replace("\r\n", "\n")
    action = request.form.get("action", "validate")
    if action not in ("validate", "save"):
        return _page(text, result={"ok": False, "errors": [f"unknown action {action!r} (validate or save)"]},
                     status=400)
    errors, warnings = _validate(text)
    result = {"ok": not errors, "action": action, "errors": errors, "warnings": warnings}
    if errors or action == "validate":
        return _page(text, result=result, status=200 if not errors else 422)
    path = _state().config_path
    if path is None:
        result.update(ok=False, errors=["no config file was given (--config): there is nothing to save to"])
        return _page(text, result=result, status=400)
    try:
        from appliance.config.replace import replace_config

        backup = replace_config(Path(path), text)
    except ApplianceError as e:
        result.update(ok=False, errors=[str(e)])
        return _page(text, result=result, status=500)
    log.warning("safe mode: %s saved from the dashboard by %s (previous kept as %s)",
                path, request.remote_addr, backup)
    result["saved"] = str(path)
    result["backup"] = str(backup) if backup else None
    return _page(text, result=result)


@bp.post("/safe-mode/restart")
def restart():
    _state().request_restart()
    log.warning("safe mode: restart requested from the dashboard by %s", request.remote_addr)
    return render_template("safemode.html", state=_state(), version=__version__, restarting=True,
                           text="", read_error=None, result=None, local_only=False, source=""), 202


@bp.get("/api/safe-mode")
def api():
    state = _state()
    return jsonify(safe_mode=True, since=state.since, reason=state.reason, errors=state.errors,
                   config=state.config_path)


def _redirect_to_safe_mode():
    if request.endpoint in _ALLOWED or (request.endpoint or "").startswith("safemode."):
        return None
    if request.path.startswith("/api/"):
        return jsonify(error=f"safe mode: {_state().reason}; see /api/safe-mode"), 503
    return redirect(url_for("safemode.page"))


def install(app: Flask, state: SafeMode, *, assets_dir: Path, source: str = "") -> None:
    """Make a create_app() app the safe-mode dashboard (module docstring)."""
    app.config["MAX_CONTENT_LENGTH"] = MAX_CONFIG_BYTES
    app.extensions["appliance_safe_mode"] = state
    app.extensions["appliance_assets_dir"] = assets_dir
    app.extensions["appliance_safe_mode_source"] = source
    app.before_request(_redirect_to_safe_mode)  # after require_login: a login comes first
    app.register_blueprint(bp)

    def healthz():
        return jsonify(status="unhealthy", reason=f"safe mode: {state.reason}"), 503

    app.view_functions["healthz"] = healthz
