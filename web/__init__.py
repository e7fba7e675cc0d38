"""The local dashboard: Flask app factory, templates and vendored static assets.

`create_app(...)` builds the app from its dependencies; `WebService` serves it beside
the pipeline with waitress. See docs/dashboard.md.
"""
from __future__ import annotations

from web.app import create_app

__all__ = ["create_app"]
