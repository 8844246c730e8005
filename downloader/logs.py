"""Log lines as text for people or as JSON for log shippers (``log_format``).

JSON lines come from python-json-logger (a well-kept formatter, rather than our own): one
object per line with ``time``, ``level``, ``logger``, ``message``, the process's ``role``
(serve, worker) and, for a failure, ``exc_info``.
"""

from __future__ import annotations

import logging

from downloader.config import Settings

_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(settings: Settings, *, role: str, force: bool = False) -> None:
    """Set the root logger up for ``role`` (``serve``, ``worker``) in the chosen format."""
    if logging.getLogger().handlers and not force:
        return
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                static_fields={"role": role},
            )
        )
    else:
        prefix = "[worker] " if role == "worker" else ""
        handler.setFormatter(logging.Formatter(_TEXT.replace("%(name)s", prefix + "%(name)s")))
    root = logging.getLogger()
    for old in list(root.handlers) if force else []:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
