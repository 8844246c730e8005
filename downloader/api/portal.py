"""The web page for researchers (``/portal/``) and the small JSON resources it reads.

- ``GET /portal/``: the page (one HTML file, ES modules and a vendored map library under
  ``/portal/static/``; no build step, nothing loaded from another host);
- ``GET /v2/fields``: the field catalogue with groups and query types, for the builder;
- ``GET /v2/estimates``: measured records/s and bytes/record, for its size and time estimates;
- ``GET /recordsets/``: the recordsets the store holds, with their export URLs;
- ``GET /portal/config.json``: the operator's page settings (map tiles).

Every page resource carries a strict Content-Security-Policy: scripts, styles, images and
requests from this origin only (map tiles from the configured tile host, if any).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import tornado.web

from downloader.api.base import BaseHandler, error_body, log_unexpected
from downloader.service import portal

STATIC_DIR = Path(__file__).resolve().parent / "static"
PAGE = STATIC_DIR / "portal" / "index.html"


def content_security_policy(tile_url: str) -> str:
    """The page's policy: this origin only, plus the tile server's origin when configured."""
    images = ["'self'", "data:", "blob:"]
    parts = urlsplit(tile_url.replace("{s}", "a")) if tile_url else None
    if parts is not None and parts.scheme in ("http", "https") and parts.netloc:
        host = parts.netloc.replace("a.", "*.", 1) if "{s}" in tile_url else parts.netloc
        images.append(f"{parts.scheme}://{host}")
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {' '.join(images)}",
            "connect-src 'self'",
            "font-src 'self'",
            "manifest-src 'self'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def _page_headers(handler: tornado.web.RequestHandler, tile_url: str) -> None:
    handler.set_header("Content-Security-Policy", content_security_policy(tile_url))
    handler.set_header("X-Content-Type-Options", "nosniff")
    handler.set_header("Referrer-Policy", "no-referrer")
    handler.set_header("Cache-Control", "no-cache")


class PageHandler(BaseHandler):
    """``GET /portal/``: the page itself (its state is in its query string or fragment)."""

    async def get(self) -> None:
        """The HTML, with the page headers."""
        _page_headers(self, self.ctx.settings.map_tile_url)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(PAGE.read_bytes())


class StaticHandler(tornado.web.StaticFileHandler):
    """``/portal/static/...``: the page's scripts, styles and map data, with the page
    headers (and ETag revalidation, so a new release is picked up at once)."""

    tile_url = ""

    def initialize(self, path: str, default_filename: str | None = None, **kw: Any) -> None:  # type: ignore[override]
        """Tornado hook: the folder, and the tile URL for the policy."""
        super().initialize(path, default_filename)
        self.tile_url = kw.get("tile_url", "")

    def set_extra_headers(self, path: str) -> None:
        """The page headers on every file."""
        _page_headers(self, self.tile_url)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """A missing or refused file is the one JSON error shape, as everywhere else."""
        self.set_header("Content-Type", "application/json; charset=utf-8")
        body = error_body(kwargs.get("exc_info"), status_code, self._reason)
        self.finish(
            "" if self.request.method == "HEAD" else json.dumps(body, sort_keys=True) + "\n"
        )

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """As every handler logs errors: the URI redacted (a ?token=), no request repr."""
        log_unexpected(self, typ, value, tb)

    def get_content_type(self) -> str:
        """JavaScript modules and GeoJSON with their proper types."""
        path = self.absolute_path or ""
        if path.endswith((".js", ".mjs")):
            return "text/javascript; charset=utf-8"
        if path.endswith(".geojson"):
            return "application/geo+json"
        if path.endswith(".svg"):
            return "image/svg+xml"
        return super().get_content_type()


class FieldsHandler(BaseHandler):
    """``GET /v2/fields``: the fields the query builder offers."""

    async def get(self) -> None:
        """The catalogue as JSON."""
        self.set_header("Cache-Control", "max-age=300")
        self.write_json(portal.fields_document())


class EstimatesHandler(BaseHandler):
    """``GET /v2/estimates``: the rates behind the page's size and time estimates."""

    async def get(self) -> None:
        """Measured over the downloads this process finished, else ``make bench``'s."""
        self.write_json(portal.MEASURED.document())


class RecordsetsHandler(BaseHandler):
    """``GET /recordsets/``: every recordset with its current version and export URL."""

    async def get(self) -> None:
        """The listing (empty with a note where the source cannot list them)."""
        self.write_json(await self.run(portal.recordsets_document, base_url=self.base_url))


class ConfigHandler(BaseHandler):
    """``GET /portal/config.json``: the operator's settings the page uses."""

    async def get(self) -> None:
        """Tile URL and attribution, publisher, retention, size limit."""
        self.write_json(portal.page_config(self.ctx))
