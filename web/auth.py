"""Login for the dashboard: one password, a signed session cookie, failed logins limited.

There is one account (the installer's), so the password alone logs in. Only its salted
hash is kept (web.password_hash, written by `appliance passwd`). With no password set
the dashboard needs no login, and the service binds it to 127.0.0.1 so that only
someone on the device itself can reach it.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, jsonify, redirect, render_template, request, session, url_for
from werkzeug.security import check_password_hash, generate_password_hash

from appliance import metrics
from appliance.config.web import is_password_hash  # noqa: F401  the config checks the form

log = logging.getLogger(__name__)
bp = Blueprint("auth", __name__)

# Reachable without a login: the login page itself, liveness and metrics for monitoring,
# and the static files (CSS, JS) the login page needs.
PUBLIC_ENDPOINTS = {"auth.login", "healthz", "metrics", "static"}


def hash_password(password: str) -> str:
    """Salted scrypt hash (werkzeug's default method), the form kept in web.password_hash."""
    return generate_password_hash(password)


class FailedLogins:
    """At most `limit` failed logins per client address in any `window_s` seconds.

    Kept in memory: a restart forgets, which is fine against guessing, because the
    scrypt check already costs about 0.1 s per try.
    """

    def __init__(self, limit: int = 5, window_s: float = 300.0):
        self.limit, self.window_s = limit, window_s
        self._fails: dict[str, deque] = {}
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> float:
        """Seconds until this client may try again; 0 when it may now."""
        now = time.monotonic()
        with self._lock:
            fails = self._fails.get(client)
            if not fails:
                return 0.0
            while fails and now - fails[0] > self.window_s:
                fails.popleft()
            if len(fails) < self.limit:
                return 0.0
            return self.window_s - (now - fails[0])

    def failed(self, client: str) -> None:
        with self._lock:
            if len(self._fails) > 10_000:  # bound memory against address spraying
                self._fails.clear()
            self._fails.setdefault(client, deque(maxlen=self.limit)).append(time.monotonic())

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._fails.pop(client, None)


def auth_enabled() -> bool:
    return bool(current_app.config["APPLIANCE_PASSWORD_HASH"])


def logged_in() -> bool:
    return not auth_enabled() or session.get("user") == "admin"


def require_login() -> Response | None:
    """before_request hook: pages redirect to the login page, the API answers 401."""
    if request.endpoint in PUBLIC_ENDPOINTS or logged_in():
        return None
    if request.path.startswith("/api/"):
        return jsonify(error="login required"), 401
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def _safe_next(target: str | None) -> str:
    """Only a path on this site: an open redirect to another host would aid phishing."""
    if not target:
        return url_for("pages.dashboard")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("pages.dashboard")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login():
    if not auth_enabled():
        return redirect(url_for("pages.dashboard"))
    limiter: FailedLogins = current_app.extensions["appliance_failed_logins"]
    client = request.remote_addr or "?"
    error, status = None, 200
    if request.method == "POST":
        wait = limiter.retry_after(client)
        if wait > 0:
            error, status = f"Too many failed logins. Try again in {wait:.0f} s.", 429
        elif check_password_hash(current_app.config["APPLIANCE_PASSWORD_HASH"],
                                 request.form.get("password", "")):
            limiter.succeeded(client)
            session.clear()  # a fresh session on login (no fixation)
            session.permanent = True
            session["user"] = "admin"
            return redirect(_safe_next(request.args.get("next")))
        else:
            limiter.failed(client)
            metrics.WEB_LOGIN_FAILURES.inc()
            log.warning("failed login from %s", client)
            error, status = "Wrong password.", 401
    resp = current_app.make_response((render_template("login.html", error=error), status))
    if status == 429:
        resp.headers["Retry-After"] = str(int(limiter.retry_after(client)) + 1)
    return resp


@bp.route("/logout", methods=["POST"])
def logout():
    session.clear()
    return redirect(url_for("auth.login") if auth_enabled() else url_for("pages.dashboard"))
