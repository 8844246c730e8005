"""Errors raised for bad queries and download requests.

Every problem with what a user sent becomes a :class:`QueryError` that names where the problem
is (``key``) and says what is wrong in words a researcher can act on. The service turns
:meth:`QueryError.to_dict` into its HTTP 400 body.
"""

from __future__ import annotations

from typing import Any


class QueryError(ValueError):
    """A query or download request that cannot be run as given.

    ``key`` locates the problem: a request parameter (``"rq"``, ``"core_type"``), or a path
    into a query (``"rq.genus"``, ``"rq.geopoint.top_left.lat"``). ``message`` is the whole
    human-readable sentence and always names the key. ``name`` follows iDigBio's error names
    (``"QueryError"``, or ``"TermNotFoundError"`` for unknown fields, whose ``terms`` extra
    lists every unknown field). Any further keyword arguments are carried in ``extra`` and
    appear in :meth:`to_dict`.
    """

    def __init__(self, key: str, detail: str, *, name: str = "QueryError", **extra: Any) -> None:
        self.key = key
        self.detail = detail
        self.message = f"{key}: {detail}"
        self.name = name
        self.extra: dict[str, Any] = dict(extra)
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body: ``{"error", "name", "key", **extra}``."""
        return {"error": self.message, "name": self.name, "key": self.key, **self.extra}

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the error picklable (Celery and process pools pickle exceptions); the default
        # reduction would call __init__ with the single formatted message.
        return (_rebuild, (self.key, self.detail, self.name, self.extra))


def _rebuild(key: str, detail: str, name: str, extra: dict[str, Any]) -> QueryError:
    return QueryError(key, detail, name=name, **extra)
