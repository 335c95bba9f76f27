"""Jinja2 templates of the hub's page, with autoescaping on for every template.

Every user-provided string (device ids, class names, token names, notes) goes through Jinja's
autoescape, so a class named ``<script>`` renders as text. Data handed to page scripts is
embedded with ``tojson`` inside a ``<script type="application/json">`` block (Jinja escapes
``<``, ``>`` and ``&`` there too) and read with ``JSON.parse``, never interpolated into code.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from hub.web.session import Viewer, set_cookie

__all__ = ["render"]

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def _ago(t: float | None) -> str:
    if not t:
        return "never"
    s = max(0.0, time.time() - float(t))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s / size:.0f} {unit} ago"
    return f"{s:.0f} s ago"


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(t))) + " UTC" if t else "—"


_ENV.filters["ago"] = _ago
_ENV.filters["when"] = _when


def render(
    request: web.Request, template: str, who: Viewer | None, status: int = 200, **ctx: Any
) -> web.Response:
    """The page ``template`` with ``ctx``, the viewer and the navigation."""
    html = _ENV.get_template(template).render(who=who, path=request.path, **ctx)
    resp = web.Response(text=html, content_type="text/html", status=status)
    resp.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
        " frame-ancestors 'none'; form-action 'self'"
    )
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Cache-Control"] = "no-store"
    set_cookie(request, resp)
    return resp
