"""The service's exceptions. Handlers map them to HTTP codes in one place."""

from __future__ import annotations


class DownloaderError(Exception):
    """Base class of the service's own errors."""


class ConfigError(DownloaderError):
    """A configuration value is missing or wrong; raised at start-up."""


class SourceUnavailable(DownloaderError):
    """The record source cannot be reached (transient: a retry may succeed)."""


class StorageUnavailable(DownloaderError):
    """Archive storage cannot be reached (transient: a retry may succeed)."""


class JobStoreUnavailable(DownloaderError, ConnectionError):
    """The job store cannot be reached (transient: a retry may succeed). A ConnectionError
    too, so code that already handles a lost connection keeps doing so."""


class JobNotFound(DownloaderError):
    """No job has this id."""


class BuildCancelled(DownloaderError):
    """The build stopped because the job was cancelled."""


class BuildFailed(DownloaderError):
    """The build cannot succeed; the message is meant for the researcher."""


class RequestError(DownloaderError):
    """Something wrong with what a client sent or asked for, answered with a 4xx JSON body.

    ``key`` names the offending parameter (``"email"``, ``"force"``, ``"rq.uuid"``) when there
    is one; ``extra`` is merged into the body.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        key: str | None = None,
        name: str = "RequestError",
        **extra: object,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.key = key
        self.name = name
        self.extra = dict(extra)

    def to_dict(self) -> dict[str, object]:
        """The JSON error body (the handler adds ``status``)."""
        body: dict[str, object] = {"error": self.message, "name": self.name, **self.extra}
        if self.key is not None:
            body["key"] = self.key
        return body


class ArchiveGone(RequestError):
    """The archive existed but has expired and was deleted (HTTP 410)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=410, name="ArchiveGone")
