"""deploy/examples/*.toml hold what `hub init` and `site_node init` write, each setting explained, and load."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

from hub.home import HubHome, init_hub
from hub.pki import make_ca
from site_node.home import SiteHome, init_home, parse_site_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "deploy" / "examples"
SECTION_REF = re.compile(r'see README\.md, section "([^"]+)"')
SETTING = re.compile(r"^[A-Za-z_][A-Za-z0-9_]* = ")


def _split(example: Path) -> tuple[list[str], str]:
    """(the command the header names on its indented lines, the generated text after the header's blank line)."""
    header, _, body = example.read_text().partition("\n\n")
    assert all(line.startswith("#") for line in header.splitlines()), "the header is comments only"
    command = " ".join(line[1:].rstrip("\\ ") for line in header.splitlines() if line.startswith("#   "))
    return shlex.split(command), body


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def _uncommented_settings(body: str) -> list[str]:
    """Setting lines (key = value) whose line above is not a comment: every setting must say what it is."""
    lines = body.splitlines()
    return [
        line
        for above, line in zip(["", *lines], lines, strict=False)
        if SETTING.match(line) and not above.lstrip().startswith("#")
    ]


@pytest.mark.parametrize("example", ["hub.toml", "site.toml"])
def test_every_setting_is_commented(example: str) -> None:
    assert _uncommented_settings((EXAMPLES / example).read_text()) == []
    assert _uncommented_settings("[a]\n# why\nx = 1\ny = 2\n") == ["y = 2"]  # the rule can fail


def test_site_example_is_what_init_writes(tmp_path: Path) -> None:
    argv, body = _split(EXAMPLES / "site.toml")
    assert argv[:2] == ["site_node", "init"], argv
    make_ca(tmp_path / Path(_option(argv, "--ca")).name, tmp_path / "ca.key", "example study")  # init copies it in
    home = init_home(
        tmp_path / "site",
        _option(argv, "--site"),
        model_dir=Path(_option(argv, "--model")),
        superlink=_option(argv, "--superlink"),
        root_certificates=tmp_path / Path(_option(argv, "--ca")).name,
    )
    written = tomllib.loads(home.config_file.read_text())
    assert tomllib.loads(body) == written, "deploy/examples/site.toml differs from what init writes (deploy/README.md)"
    config = parse_site_config(tomllib.loads(body), EXAMPLES / "site.toml")
    assert config.name == _option(argv, "--site") and config.superlink == _option(argv, "--superlink")
    assert SiteHome(home.root).config() == parse_site_config(tomllib.loads(body), home.config_file)


def test_hub_example_is_what_init_writes(tmp_path: Path) -> None:
    argv, body = _split(EXAMPLES / "hub.toml")
    assert argv[:2] == ["hub", "init"], argv
    home = init_hub(tmp_path / "hub", public_host=_option(argv, "--host"), bind=_option(argv, "--bind"))
    written = home.config_file.read_text().replace(str(home.root), _option(argv, "--home"))
    assert tomllib.loads(body) == tomllib.loads(written), "deploy/examples/hub.toml differs from what init writes"
    (tmp_path / "loaded").mkdir()
    (tmp_path / "loaded" / "hub.toml").write_text(body)
    config = HubHome(tmp_path / "loaded").config()
    assert (config.public_host, config.bind) == (_option(argv, "--host"), _option(argv, "--bind"))
    assert config.store_url == f"sqlite:///{_option(argv, '--home')}/state/results.db"


@pytest.mark.parametrize("example", ["hub.toml", "site.toml"])
def test_readme_sections_named_in_the_configs_exist(example: str) -> None:
    headings = {line.lstrip("#").strip() for line in (REPO / "README.md").read_text().splitlines() if line[:1] == "#"}
    named = SECTION_REF.findall((EXAMPLES / example).read_text())
    assert named, f"{example} points to a README section"
    assert set(named) <= headings, f"README has no section {set(named) - headings}"
