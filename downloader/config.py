"""Configuration: ``config.yaml`` defaults, an optional other file, environment overrides.

Read once, at start-up, into one frozen dataclass. A bad value stops the program with a
message that names the setting.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import urlsplit

import yaml

from downloader.errors import ConfigError


def defaults_file(package_dir: Path) -> Path:
    """The settings' defaults for the package in ``package_dir``: the copy an install that
    is not a checkout carries in the package (setup.py puts it there), else config.yaml at
    the top of the checkout (``make`` installs the checkout in place)."""
    packaged = package_dir / "config.yaml"
    return packaged if packaged.is_file() else package_dir.parent / "config.yaml"


#: The packaged defaults (see :func:`defaults_file`).
DEFAULTS_FILE = defaults_file(Path(__file__).resolve().parent)
ENV_PREFIX = "DOWNLOADER_"

_CHOICES: dict[str, tuple[str, ...]] = {
    "record_source": ("duckdb", "elasticsearch"),
    "job_store": ("sqlite", "redis"),
    "dispatcher": ("local", "celery"),
    "storage": ("local", "s3"),
    "smtp_security": ("none", "starttls", "ssl"),
    "log_format": ("text", "json"),
}


@dataclass(frozen=True)
class Settings:
    """Every setting of the service; ``config.yaml`` documents each one."""

    data_dir: str
    host: str
    port: int
    base_url: str
    allowed_hosts: str
    record_source: str
    job_store: str
    dispatcher: str
    storage: str
    workers: int
    worker_max_jobs: int
    worker_max_rss_mb: int
    worker_nice: int
    large_job_records: int
    small_job_workers: int
    reuse_window_hours: float
    retention_days: float
    max_attempts: int
    transient_retry_seconds: float
    transient_retry_first_seconds: float
    job_time_limit_seconds: int
    progress_every: int
    batch_size: int
    cleanup_interval_seconds: float
    stale_job_seconds: float
    dispatch_poll_seconds: float
    max_body_bytes: int
    max_query_bytes: int
    max_uuid_selection: int
    client_timeout_seconds: float
    shutdown_grace_seconds: float
    max_download_records: int
    new_jobs_per_minute: int
    active_jobs_per_requester: int
    emails_per_address_per_day: int
    max_queued_jobs: int
    limits_storage_url: str = field(repr=False)
    trust_forwarded_for: bool
    publisher_name: str
    publisher_url: str
    intellectual_rights: str
    recordset_url_template: str
    log_format: str
    map_tile_url: str
    map_tile_attribution: str
    smtp_host: str
    smtp_port: int
    smtp_security: str
    smtp_user: str
    smtp_password: str = field(repr=False)
    mail_from: str
    smtp_timeout_seconds: float
    redis_url: str
    celery_broker_url: str
    elasticsearch_url: str
    elasticsearch_index_prefix: str
    elasticsearch_timeout_seconds: float
    elasticsearch_api_key: str = field(repr=False)
    elasticsearch_username: str
    elasticsearch_password: str = field(repr=False)
    elasticsearch_ca_certs: str
    elasticsearch_verify_certs: bool
    s3_bucket: str
    s3_create_bucket: bool
    s3_endpoint_url: str
    s3_region: str
    s3_prefix: str
    s3_exports_prefix: str
    s3_public_base_url: str
    s3_presign_seconds: int
    admin_tokens: str = field(repr=False)  # never in a log line or a traceback

    @property
    def data_path(self) -> Path:
        """``data_dir`` as a path."""
        return Path(self.data_dir)

    @property
    def allowed_host_list(self) -> list[str]:
        """The ``allowed_hosts`` entries, split, stripped and lower-cased."""
        return [h.strip().lower() for h in self.allowed_hosts.split(",") if h.strip()]

    @property
    def limits_storage(self) -> str:
        """Where the rate counters live (``limits_storage_url``, else by the job store)."""
        if self.limits_storage_url:
            return self.limits_storage_url
        return self.redis_url if self.job_store == "redis" else "memory://"

    @property
    def admin_token_list(self) -> list[str]:
        """The admin tokens, split and stripped."""
        return [t.strip() for t in self.admin_tokens.split(",") if t.strip()]

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed (validated like the originals)."""
        merged = dataclasses.asdict(self) | changes
        return _build(merged, origin="override")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text("utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file {path} does not exist") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"configuration file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"configuration file {path} must hold a mapping of settings")
    return data


def _coerce(name: str, value: Any, typ: type, origin: str) -> Any:
    if value is None:
        value = ""
    try:
        if typ is str:
            return str(value)
        if typ is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if typ is int:
            if isinstance(value, bool):
                raise ValueError(value)
            return int(str(value).strip())
        if typ is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(str(value).strip())
    except ValueError as exc:
        raise ConfigError(
            f"setting {name} ({origin}) must be {typ.__name__}, got {value!r}"
        ) from exc
    raise ConfigError(f"setting {name} has an unsupported type")  # pragma: no cover


def _build(raw: dict[str, Any], *, origin: str, origins: dict[str, str] | None = None) -> Settings:
    """Settings from ``raw``; a bad value's message names where it came from (``origins``
    per setting, else ``origin``)."""
    origins = origins or {}
    hints = get_type_hints(Settings)
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown setting(s) in {origin}: {', '.join(unknown)}")
    missing = sorted(known - set(raw))
    if missing:
        raise ConfigError(f"setting(s) missing from {origin}: {', '.join(missing)}")
    values = {
        name: _coerce(name, raw[name], hints[name], origins.get(name, origin)) for name in known
    }
    for name, choices in _CHOICES.items():
        if values[name] not in choices:
            raise ConfigError(
                f"setting {name} must be one of {', '.join(choices)}, got {values[name]!r}"
            )
    for name in (
        "port",
        "workers",
        "worker_max_jobs",
        "max_attempts",
        "job_time_limit_seconds",
        "progress_every",
        "batch_size",
        "max_body_bytes",
        "max_query_bytes",
        "max_uuid_selection",
        "s3_presign_seconds",
    ):
        if values[name] <= 0:
            raise ConfigError(f"setting {name} must be a positive number, got {values[name]}")
    if not 0 < values["port"] < 65536:
        raise ConfigError(f"setting port must be between 1 and 65535, got {values['port']}")
    for name in ("stale_job_seconds", "dispatch_poll_seconds", "client_timeout_seconds"):
        if values[name] <= 0:
            raise ConfigError(f"setting {name} must be a positive number, got {values[name]}")
    if values["transient_retry_first_seconds"] <= 0:
        raise ConfigError(
            "setting transient_retry_first_seconds must be a positive number, got "
            f"{values['transient_retry_first_seconds']}"
        )
    for name in (
        "reuse_window_hours",
        "retention_days",
        "transient_retry_seconds",
        "cleanup_interval_seconds",
        "shutdown_grace_seconds",
        "large_job_records",
        "small_job_workers",
        "max_download_records",
        "new_jobs_per_minute",
        "active_jobs_per_requester",
        "emails_per_address_per_day",
        "max_queued_jobs",
    ):
        if values[name] < 0:
            raise ConfigError(f"setting {name} must not be negative, got {values[name]}")
    if not 0 <= values["worker_nice"] <= 19:
        raise ConfigError(
            f"setting worker_nice must be between 0 and 19, got {values['worker_nice']}"
        )
    if values["storage"] == "s3" and values["s3_exports_prefix"].startswith(values["s3_prefix"]):
        # The lifecycle rule expires everything under s3_prefix; exports must stay.
        raise ConfigError(
            f"setting s3_exports_prefix ({values['s3_exports_prefix']!r}) must lie outside "
            f"s3_prefix ({values['s3_prefix']!r}): objects under s3_prefix expire after "
            "retention_days, and recordset exports are kept until deleted"
        )
    _check_elasticsearch_urls(values["elasticsearch_url"])
    _check_elasticsearch_auth(values)
    _check_allowed_hosts(values["allowed_hosts"])
    values["base_url"] = values["base_url"].rstrip("/")
    return Settings(**values)


#: One ``allowed_hosts`` entry: ``*``, or a host name (``.`` first for its subdomains too).
_ALLOWED_HOST = re.compile(r"^(\*|\.?[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\])$")


def _check_allowed_hosts(text: str) -> None:
    for entry in (h.strip().lower() for h in text.split(",")):
        if entry and not _ALLOWED_HOST.match(entry):
            raise ConfigError(
                f"setting allowed_hosts: {entry!r} is not a host name; give names such as "
                "downloads.example.org or .example.org (no scheme, port or path), "
                "separated by commas"
            )


def _check_elasticsearch_urls(text: str) -> None:
    for url in (u.strip() for u in text.split(",")):
        if not url:
            continue
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"setting elasticsearch_url: {url!r} is not a URL ({exc})") from exc
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"setting elasticsearch_url: {url!r} must be http:// or https:// with a host, "
                "such as http://127.0.0.1:9200"
            )
        if port is None:
            raise ConfigError(
                f"setting elasticsearch_url: {url!r} has no port, which the client needs; "
                f"add it, such as {parts.scheme}://{parts.hostname}:9200"
            )


def _check_elasticsearch_auth(values: dict[str, Any]) -> None:
    if values["elasticsearch_api_key"] and values["elasticsearch_username"]:
        raise ConfigError(
            "settings elasticsearch_api_key and elasticsearch_username are both set: give an "
            "API key or a user and password, not both"
        )
    if bool(values["elasticsearch_username"]) != bool(values["elasticsearch_password"]):
        raise ConfigError(
            "settings elasticsearch_username and elasticsearch_password go together: set both "
            "for basic auth, or neither"
        )
    ca_certs = values["elasticsearch_ca_certs"]
    if ca_certs and values["record_source"] == "elasticsearch" and not Path(ca_certs).is_file():
        raise ConfigError(f"setting elasticsearch_ca_certs names {ca_certs!r}, which is not a file")


def load_settings(
    env: dict[str, str] | None = None, *, overrides: dict[str, Any] | None = None
) -> Settings:
    """Read the defaults, then ``DOWNLOADER_CONFIG``'s file, then ``DOWNLOADER_*`` variables,
    then ``overrides`` (command-line options). Raises :class:`ConfigError` for a bad value."""
    env = dict(os.environ) if env is None else env
    raw = _read_yaml(DEFAULTS_FILE)
    origin = str(DEFAULTS_FILE)
    other = env.get(ENV_PREFIX + "CONFIG")
    if other:
        extra = _read_yaml(Path(other))
        unknown = sorted(set(extra) - set(raw))
        if unknown:
            raise ConfigError(f"unknown setting(s) in {other}: {', '.join(unknown)}")
        raw.update(extra)
        origin = other
    origins: dict[str, str] = {}
    for name in list(raw):
        key = ENV_PREFIX + name.upper()
        if key in env:
            raw[name] = env[key]
            origins[name] = f"environment variable {key}"
    for name, value in (overrides or {}).items():
        if value is not None:
            raw[name] = value
            origins[name] = "command line"
    return _build(raw, origin=origin, origins=origins)
