"""Running builds: where a job goes after it is saved, and what picks it up.

- :mod:`.local`: the embedded dispatcher, worker processes inside ``downloader serve``,
  each running :mod:`.worker` (one job per process);
- :mod:`.celery_app`, :mod:`.tasks`, :mod:`.celery_dispatch`: at scale, the Celery
  application, its one task and the API side that enqueues it.

Both end in the same :func:`downloader.build.build_archive`.
"""

from __future__ import annotations

from downloader.config import Settings
from downloader.interfaces import Dispatcher


def make_dispatcher(settings: Settings) -> Dispatcher:
    """The dispatcher named by ``dispatcher``. The local one must be started (``start()``)
    by the process that serves requests; Celery's needs nothing but the broker."""
    if settings.dispatcher == "celery":
        from downloader.dispatch.celery_dispatch import CeleryDispatcher

        return CeleryDispatcher(settings)
    from downloader.dispatch.local import LocalDispatcher

    return LocalDispatcher(settings)
