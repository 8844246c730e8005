"""Configuration: defaults, DOWNLOADER_CONFIG, environment overrides, clear errors, docs."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from downloader.config import DEFAULTS_FILE, Settings, defaults_file, load_settings
from downloader.errors import ConfigError

README = DEFAULTS_FILE.parent / "README.md"


def test_defaults_load() -> None:
    settings = load_settings({})
    assert settings.dispatcher == "local" and settings.reuse_window_hours == 23


def test_the_defaults_are_the_checkouts_or_the_installed_packages(tmp_path: Path) -> None:
    """A checkout (installed in place by make) has config.yaml at its top; an install that
    is not a checkout (pip install ., a wheel) carries a copy in the package (setup.py),
    which it must find: site-packages has no config.yaml of ours at its top."""
    package = tmp_path / "site-packages" / "downloader"
    package.mkdir(parents=True)
    assert defaults_file(package) == tmp_path / "site-packages" / "config.yaml"
    (package / "config.yaml").write_text("port: 8080\n")
    assert defaults_file(package) == package / "config.yaml"
    assert DEFAULTS_FILE.is_file()


def test_environment_overrides_one_setting() -> None:
    settings = load_settings({"DOWNLOADER_PORT": "9001", "DOWNLOADER_WORKERS": "4"})
    assert (settings.port, settings.workers) == (9001, 4)


def test_other_file_via_downloader_config(tmp_path: Path) -> None:
    other = tmp_path / "site.yaml"
    other.write_text("port: 9100\nsmtp_host: mail.example.org\n")
    settings = load_settings({"DOWNLOADER_CONFIG": str(other), "DOWNLOADER_PORT": "9200"})
    # The environment still beats the file; the file beats the defaults.
    assert settings.port == 9200 and settings.smtp_host == "mail.example.org"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DOWNLOADER_PORT": "eighty"}, "port"),
        ({"DOWNLOADER_WORKERS": "0"}, "workers"),
        ({"DOWNLOADER_STORAGE": "ftp"}, "storage must be one of local, s3"),
        ({"DOWNLOADER_STALE_JOB_SECONDS": "-1"}, "stale_job_seconds"),
        ({"DOWNLOADER_WORKER_NICE": "20"}, "worker_nice must be between 0 and 19"),
        ({"DOWNLOADER_WORKER_NICE": "-5"}, "worker_nice must be between 0 and 19"),
        ({"DOWNLOADER_CONFIG": "/nonexistent/x.yaml"}, "does not exist"),
        (
            {"DOWNLOADER_STORAGE": "s3", "DOWNLOADER_S3_EXPORTS_PREFIX": "downloads/exports/"},
            "s3_exports_prefix",
        ),
        ({"DOWNLOADER_STORAGE": "s3", "DOWNLOADER_S3_PREFIX": ""}, "s3_exports_prefix"),
    ],
)
def test_bad_values_give_an_error_naming_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


def test_unknown_setting_in_other_file_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "site.yaml"
    other.write_text("prot: 9100\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings({"DOWNLOADER_CONFIG": str(other)})


def test_every_setting_is_documented_in_config_yaml_and_readme() -> None:
    yaml_text = DEFAULTS_FILE.read_text("utf-8")
    readme = README.read_text("utf-8")
    for f in fields(Settings):
        # In config.yaml: the key, directly preceded by at least one comment line.
        match = re.search(rf"((?:^#.*\n)+)^{f.name}:", yaml_text, re.MULTILINE)
        assert match, f"{f.name} has no comment above it in config.yaml"
        assert f"`{f.name}`" in readme, f"{f.name} is missing from the README's reference"


def test_a_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="environment variable DOWNLOADER_PORT"):
        load_settings({"DOWNLOADER_PORT": "eighty"})
    with pytest.raises(ConfigError, match="command line"):
        load_settings({}, overrides={"workers": "many"})


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://es.example.org", "no port"),
        ("es.example.org:9200", "http:// or https://"),
        ("http://127.0.0.1:9200,https://es2", "no port"),
        ("http://es:port", "not a URL"),
    ],
)
def test_an_elasticsearch_url_the_client_cannot_use_is_a_config_error(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load_settings({"DOWNLOADER_ELASTICSEARCH_URL": url})
    assert load_settings({"DOWNLOADER_ELASTICSEARCH_URL": "https://es:443"}).elasticsearch_url


def test_secrets_never_show_in_the_settings_repr() -> None:
    # A settings object in a log line or a traceback must not carry a token or a password.
    settings = load_settings(
        {},
        overrides={
            "admin_tokens": "admin-s3cret,other-s3cret",
            "smtp_password": "smtp-s3cret",
            "elasticsearch_username": "elastic",
            "elasticsearch_password": "es-s3cret",
        },
    )
    assert settings.admin_token_list == ["admin-s3cret", "other-s3cret"]
    assert "s3cret" not in repr(settings)
