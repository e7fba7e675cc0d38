"""The Flask app factory: the dashboard, the JSON API, /healthz and /metrics.

create_app() takes everything it reads as arguments (config, a status provider, the
database path, the live view), so tests build one against a temporary database and a
stand-in status, and the appliance builds one against its running pipeline.
"""
from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from flask import Blueprint, Flask, current_app, jsonify, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from appliance import __version__, metrics
from appliance.config import Config, secret_value
from appliance.live import LiveView
from web import analytics, api, auth, health, selftest
from web.auth import FailedLogins
from web.health import StatusProvider

pages = Blueprint("pages", __name__)

# Everything the pages load comes from this server: no CDN, no inline script.
_CSP = ("default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


@pages.get("/")
def dashboard():
    cfg: Config = current_app.config["APPLIANCE_CONFIG"]
    return render_template("dashboard.html", device_id=cfg.device.id, version=__version__,
                           cameras=[c.id for c in cfg.cameras],
                           local_only=not auth.auth_enabled())


def create_app(cfg: Config, status: StatusProvider, db_path: Path, live: LiveView | None = None, *,
               data_dir: Path | None = None, secret_key: bytes | None = None,
               config_path: Path | None = None, analytics_hooks: analytics.AnalyticsHooks | None = None) -> Flask:
    """config_path: the file the line and zone editor saves to (None: the built-in demo, no
    saving); analytics_hooks: the running pipeline's live counts and apply (web/analytics.py)."""
    app = Flask(__name__)
    app.config.update(
        # Sessions end when the appliance restarts (a new key): no key file to protect on disk.
        SECRET_KEY=secret_key or os.urandom(32),
        SESSION_COOKIE_NAME="appliance_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
        MAX_CONTENT_LENGTH=16 * 1024,  # nothing posted here is larger than a login form
        APPLIANCE_CONFIG=cfg,
        APPLIANCE_PASSWORD_HASH=secret_value(cfg.web.password_hash),  # "": no login
        APPLIANCE_DATA_DIR=data_dir or db_path.parent,
        APPLIANCE_CONFIG_PATH=config_path,
    )
    CSRFProtect(app)
    app.extensions["appliance_status"] = status
    app.extensions["appliance_db"] = api.ReadOnlyDB(db_path)
    app.extensions["appliance_live"] = live
    app.extensions["appliance_failed_logins"] = FailedLogins()
    app.extensions["appliance_analytics"] = analytics_hooks
    app.before_request(auth.require_login)
    app.register_blueprint(auth.bp)
    app.register_blueprint(pages)
    app.register_blueprint(api.bp)
    app.register_blueprint(analytics.bp)
    app.register_blueprint(selftest.bp)  # /selftest: the installer's check (appliance/selftest/)
    app.extensions["appliance_selftest"] = selftest.Runner()

    @app.get("/healthz", endpoint="healthz")
    def healthz():
        alive, reason = health.liveness(status.status(), cfg.web.stale_after_s)
        return jsonify(status="ok" if alive else "unhealthy", reason=reason), (200 if alive else 503)

    @app.get("/metrics", endpoint="metrics")
    def prometheus_metrics():
        health.disk(app.config["APPLIANCE_DATA_DIR"])  # refreshes the free-space gauge
        return generate_latest(REGISTRY), 200, {"Content-Type": CONTENT_TYPE_LATEST}

    @app.errorhandler(CSRFError)
    def csrf_error(e: CSRFError):
        return _error(f"CSRF check failed: {e.description} Reload the page and try again.", 400)

    @app.errorhandler(404)
    def not_found(_e):
        return _error("not found", 404)

    @app.errorhandler(405)
    def not_allowed(_e):
        return _error("method not allowed", 405)

    @app.errorhandler(500)
    def internal_error(_e):  # Flask has logged the traceback already
        return _error("internal error; the appliance's log has the details", 500)

    @app.after_request
    def headers_and_count(resp):
        resp.headers.setdefault("Content-Security-Policy", _CSP)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        if request.path.startswith("/api/") and "Cache-Control" not in resp.headers:
            resp.headers["Cache-Control"] = "no-store"
        rule = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.WEB_REQUESTS.labels(rule, str(resp.status_code)).inc()
        return resp

    return app


def _error(message: str, code: int):
    if request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json":
        return jsonify(error=message), code
    return render_template("error.html", message=message, code=code), code
