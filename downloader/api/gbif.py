"""GBIF's occurrence download API (:mod:`downloader.service.gbif`): the paths pygbif and
rgbif call, on the same jobs as our own API.

- ``POST /v1/occurrence/download/request``: the key, as ``text/plain`` (201);
- ``GET /v1/occurrence/download/{key}``: the Download object;
- ``GET /v1/occurrence/download/request/{key}`` (or ``{key}.zip``): a redirect to the file;
  ``DELETE``: cancel;
- ``GET /v1/occurrence/download/user/{user}``: a creator's downloads.
"""

from __future__ import annotations

import json

from downloader.api.base import BaseHandler, DeletableHandler, request_token
from downloader.errors import RequestError
from downloader.service import gbif

#: Largest ``offset`` of a user's downloads list accepted.
MAX_OFFSET = 1_000_000_000


class RequestHandler(BaseHandler):
    """``POST /v1/occurrence/download/request``."""

    async def post(self) -> None:
        """Start or join the download; answers its key as text, as GBIF does."""
        try:
            body = json.loads(self.request.body or b"null")
        except (ValueError, UnicodeDecodeError):
            raise RequestError("the body is not valid JSON", key="body") from None
        except RecursionError:
            raise RequestError("the body's JSON is nested too deeply", key="body") from None
        credentials = gbif.basic_user(self.request.headers.get("Authorization", ""))
        key = await self.run(
            gbif.request,
            body,
            credentials=credentials,
            base_url=self.base_url,
            caller=self.caller(),
        )
        self.set_status(201)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(key)


class DownloadHandler(BaseHandler):
    """``GET /v1/occurrence/download/{key}``: GBIF's Download object."""

    async def get(self, key: str) -> None:
        """The download's metadata and status (``application/json`` without a charset
        parameter: pygbif compares the content type exactly)."""
        doc = await self.run(gbif.download_object, key, base_url=self.base_url)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(doc, sort_keys=True))


class UserHandler(BaseHandler):
    """``GET /v1/occurrence/download/user/{user}``: a creator's downloads (paged)."""

    async def get(self, user: str) -> None:
        """GBIF's paged list; the user's own Basic credentials (unchecked) or an admin."""
        from downloader.service.jobs import is_admin

        auth = self.request.headers.get("Authorization", "")
        credentials = gbif.basic_user(auth)
        admin = not auth.lower().startswith("basic ") and is_admin(self.ctx, request_token(self))
        try:
            offset = int(self.get_query_argument("offset", "0"))
            limit = int(self.get_query_argument("limit", "20"))
        except ValueError:
            raise RequestError("offset and limit must be whole numbers", key="limit") from None
        if offset > MAX_OFFSET:
            # Past any list this service holds; the job store's integers end at 2**63.
            raise RequestError(f"offset must be at most {MAX_OFFSET}", key="offset")
        doc = await self.run(
            gbif.user_downloads,
            user,
            credentials=credentials,
            admin=admin,
            offset=max(0, offset),
            limit=limit,
            base_url=self.base_url,
        )
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(doc, sort_keys=True))


class FileHandler(DeletableHandler):
    """``/v1/occurrence/download/request/{key}[.zip]``: the file (a redirect), or cancel."""

    async def get(self, key: str) -> None:
        """302 to the archive; 404 while it is built, 410 once erased."""
        url = await self.run(gbif.file_url, key, base_url=self.base_url)
        self.redirect(url, status=302)

    async def delete(self, key: str) -> None:
        """Cancel (the creator's Basic credentials or an admin token): 204."""
        auth = self.request.headers.get("Authorization", "")
        credentials = gbif.basic_user(auth)
        token = None if auth.lower().startswith("basic ") else request_token(self)
        await self.run(
            gbif.cancel, key, credentials=credentials, token=token, base_url=self.base_url
        )
        self.set_status(204)
        self.finish()
