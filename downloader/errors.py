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


class JobNotFound(DownloaderError):
    """No job has this id."""


class BuildCancelled(DownloaderError):
    """The build stopped because the job was cancelled."""


class BuildFailed(DownloaderError):
    """The build cannot succeed; the message is meant for the researcher."""
