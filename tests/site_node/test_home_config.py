"""site.toml settings this module validates, and what `init` puts in a home (the study CA copy, owner-only modes)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hub.pki import make_ca
from protocols.errors import ConfigError
from site_node.home import SiteHome, init_home, parse_site_config, proxy_shown

BASE = {"site": {"name": "site-a"}}


@pytest.mark.parametrize(
    ("hub", "expected"),
    [
        ({}, None),
        ({"https_proxy": "http://proxy.example:3128"}, "http://proxy.example:3128"),
        ({"https_proxy": "http://127.0.0.1:8888/"}, "http://127.0.0.1:8888/"),
        ({"https_proxy": "proxy.example:3128"}, ConfigError),  # no scheme
        ({"https_proxy": "socks5://proxy.example:1080"}, ConfigError),
        ({"https_proxy": "http://proxy.example"}, ConfigError),  # no port
        ({"https_proxy": "http://proxy.example:3128/path"}, ConfigError),
        ({"https_proxy": 3128}, ConfigError),
    ],
)
def test_https_proxy(hub: dict[str, object], expected: object) -> None:
    data = {**BASE, "hub": hub}
    if expected is ConfigError:
        with pytest.raises(ConfigError, match=r"\[hub\] https_proxy"):
            parse_site_config(data, Path("site.toml"))
    else:
        assert parse_site_config(data, Path("site.toml")).https_proxy == expected


@pytest.mark.parametrize(
    ("value", "ok"), [(None, True), (0.5, True), (0, True), (1, True), (1.5, False), (-0.1, False), (True, False)]
)
def test_max_blank_share(value: object, ok: bool) -> None:
    data = {**BASE, "ingest": {} if value is None else {"max_blank_share": value}}
    if ok:
        assert parse_site_config(data, Path("site.toml")).max_blank_share == value
    else:
        with pytest.raises(ConfigError, match=r"\[ingest\] max_blank_share must be a number in \[0, 1\]"):
            parse_site_config(data, Path("site.toml"))


def test_init_copies_the_study_ca_and_writes_owner_only(tmp_path: Path) -> None:
    make_ca(tmp_path / "ca.crt", tmp_path / "ca.key", "study")
    home = init_home(tmp_path / "site", "site-a", root_certificates=tmp_path / "ca.crt")
    (tmp_path / "ca.crt").unlink()  # the downloaded file goes away; the home keeps its copy
    assert home.config().root_certificates == home.ca_file
    assert SiteHome(home.root).ca_file.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    for path in [home.root, *home.root.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} has mode {mode:04o}"


def test_init_refuses_a_ca_that_is_no_certificate(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("not a certificate")
    with pytest.raises(ConfigError, match="expected a PEM certificate"):
        init_home(tmp_path / "site", "site-a", root_certificates=tmp_path / "ca.crt")
    assert not (tmp_path / "site" / "site.toml").exists()


def test_proxy_credentials_stay_out_of_logs() -> None:
    data = {**BASE, "hub": {"https_proxy": "http://ward:s3cret@proxy.example:3128"}}
    url = parse_site_config(data, Path("site.toml")).https_proxy
    assert url is not None and proxy_shown(url) == "http://proxy.example:3128"


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({}, ("hf", None, None)),
        ({"backend": "hf"}, ("hf", None, None)),
        ({"backend": "openai", "endpoint": "http://127.0.0.1:8000/v1"}, ("openai", "http://127.0.0.1:8000/v1", None)),
        (
            {"backend": "openai", "endpoint": "https://vllm.hospital.example/v1", "served_model": "surg-r1"},
            ("openai", "https://vllm.hospital.example/v1", "surg-r1"),
        ),
        ({"backend": "vllm"}, r"\[model\] backend must be 'hf' or 'openai', got 'vllm'"),
        ({"backend": "openai"}, r"\[model\] endpoint must be the server's base URL .* got None"),
        ({"backend": "openai", "endpoint": "127.0.0.1:8000/v1"}, r"endpoint must be .* got '127.0.0.1:8000/v1'"),
        ({"backend": "openai", "endpoint": "ftp://host/v1"}, r"\[model\] endpoint must be"),
        ({"backend": "openai", "endpoint": "http://host:99999/v1"}, r"\[model\] endpoint must be"),
        ({"backend": "openai", "endpoint": "http://ward:pw@host:8000/v1"}, r"no user name or password"),
        ({"backend": "openai", "endpoint": "http://host:8000/v1?key=1"}, r"no query or fragment"),
        ({"endpoint": "http://127.0.0.1:8000/v1"}, r"endpoint .* is set, but backend is \"hf\""),
        ({"backend": "openai", "endpoint": "http://h:1/v1", "served_model": 7}, r"\[model\] served_model must be str"),
    ],
)
def test_model_backend(model: dict[str, object], expected: object) -> None:
    data = {**BASE, "model": model}
    if isinstance(expected, str):
        with pytest.raises(ConfigError, match=expected):
            parse_site_config(data, Path("site.toml"))
    else:
        config = parse_site_config(data, Path("site.toml"))
        assert (config.backend.value, config.endpoint, config.served_model) == expected


def test_init_writes_the_hf_backend(tmp_path: Path) -> None:
    """The template's `backend = "hf"` line is the default; the README tells sites to edit that line."""
    home = init_home(tmp_path / "site", "site-a")
    assert 'backend = "hf"\n' in home.config_file.read_text() and home.config().backend.value == "hf"
