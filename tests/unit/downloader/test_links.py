"""Link building: which Host values may appear in links, and the base URL a request gets."""

from __future__ import annotations

import pytest

from downloader.config import load_settings
from downloader.errors import ConfigError
from downloader.links import host_allowed, listen_base_url, request_base_url, split_host


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("downloads.example.org", ("downloads.example.org", "")),
        ("Downloads.Example.org:8443", ("downloads.example.org", "8443")),
        ("127.0.0.1:8080", ("127.0.0.1", "8080")),
        ("[::1]:8080", ("[::1]", "8080")),
        ("good.example@evil.example", None),
        ("good.example/evil", None),
        ("good.example:80:81", None),
        ("good example", None),
        ("", None),
    ],
)
def test_split_host(value: str, parts: tuple[str, str] | None) -> None:
    assert split_host(value) == parts


@pytest.mark.parametrize(
    ("value", "allowed", "expected"),
    [
        ("downloads.example.org", ["downloads.example.org"], True),
        ("DOWNLOADS.example.org:8443", ["downloads.example.org"], True),
        ("evil.example", ["downloads.example.org"], False),
        ("downloads.example.org.evil.example", ["downloads.example.org"], False),
        ("a.example.org", [".example.org"], True),
        ("example.org", [".example.org"], True),
        ("badexample.org", [".example.org"], False),
        ("anything.example", ["*"], True),
        ("good.example@evil.example", ["*"], False),
        ("evil.example", [], False),
    ],
)
def test_host_allowed(value: str, allowed: list[str], expected: bool) -> None:
    assert host_allowed(value, allowed) is expected


def test_request_base_url_prefers_base_url_then_allowed_host_then_listen_address() -> None:
    configured = load_settings(
        {}, overrides={"base_url": "https://dl.example.org/", "allowed_hosts": "a.example"}
    )
    assert (
        request_base_url(configured, scheme="http", host_header="a.example")
        == "https://dl.example.org"
    )
    listed = load_settings({}, overrides={"allowed_hosts": "a.example, .b.example"})
    assert request_base_url(listed, scheme="http", host_header="a.example:81") == (
        "http://a.example:81"
    )
    assert request_base_url(listed, scheme="https", host_header="x.b.example") == (
        "https://x.b.example"
    )
    reached = ("10.0.0.5", 9000)
    for foreign in ("evil.example", "", "a.example@evil.example"):
        url = request_base_url(listed, scheme="http", host_header=foreign, local_address=reached)
        assert url == "http://10.0.0.5:9000"
    plain = load_settings({}, overrides={"host": "127.0.0.1", "port": 8099})
    assert request_base_url(plain, scheme="http", host_header="evil.example") == (
        "http://127.0.0.1:8099"
    )


def test_listen_base_url_brackets_ipv6() -> None:
    settings = load_settings({})
    assert listen_base_url(settings, ("::1", 8080)) == "http://[::1]:8080"


@pytest.mark.parametrize("bad", ["https://a.example", "a.example:8080", "a.example/x", "a b"])
def test_allowed_hosts_refuses_urls_ports_and_paths(bad: str) -> None:
    with pytest.raises(ConfigError, match="allowed_hosts"):
        load_settings({"DOWNLOADER_ALLOWED_HOSTS": f"ok.example,{bad}"})


def test_allowed_hosts_from_the_environment() -> None:
    settings = load_settings({"DOWNLOADER_ALLOWED_HOSTS": " A.example , .b.example ,"})
    assert settings.allowed_host_list == ["a.example", ".b.example"]
