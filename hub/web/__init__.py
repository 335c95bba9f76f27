"""The hub's web page: server-rendered pages under ``/ui/`` behind the hub's tokens and roles.

Pages: fleet, rollouts, samples explorer, annotation and review, training jobs with their model
cards, shadow reports. No build step: Jinja2 templates, one stylesheet and one small script for
drawing boxes, all served by the hub itself. See :mod:`hub.web.session` for login, the session
cookie and CSRF; the auth middleware leaves ``/ui/`` to these handlers, which check the session.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from hub.web import annotate, pages

__all__ = ["ROUTE_TABLES", "STATIC_DIR", "add_static"]

STATIC_DIR = Path(__file__).with_name("static")
ROUTE_TABLES: tuple[web.RouteTableDef, ...] = (pages.routes, annotate.routes)


def add_static(app: web.Application) -> None:
    """Serve the page's stylesheet and script (public files, no user data)."""
    app.router.add_static("/ui/static/", STATIC_DIR, append_version=True)
