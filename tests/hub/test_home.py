"""hub.toml: the store URL from [store] url, from an older home's [hub] store_url, or from --db; [web] defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.home import HubHome, init_hub

OLD_TOML = """[hub]
study_name = "old"
store_url = "sqlite:///{db}"

[superlink]
port = 9093

[fleet]
host = "127.0.0.1"
port = 9092
"""


def test_new_home_names_store_and_web(tmp_path: Path) -> None:
    cfg = init_hub(tmp_path / "hub").config()
    assert cfg.store_url == f"sqlite:///{tmp_path / 'hub' / 'state' / 'results.db'}"
    assert (cfg.web_host, cfg.web_port, cfg.web_public_url) == ("127.0.0.1", 8780, "")


@pytest.mark.parametrize("override", [None, "other.db"])
def test_home_made_before_store_section(tmp_path: Path, override: str | None) -> None:
    (tmp_path / "hub.toml").write_text(OLD_TOML.format(db=tmp_path / "results.db"))
    url = None if override is None else f"sqlite:///{tmp_path / override}"
    home = HubHome(tmp_path, store_url=url)
    assert home.config().web_port == 8780
    home.store().add_site("a", 1, None)
    assert (tmp_path / (override or "results.db")).is_file()
    assert home.store() is home.store()  # opened and migrated once per home
