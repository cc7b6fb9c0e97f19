"""`hub launch`'s roster checks on a real hub home (SQLite store, certificates): unregistered sites refused,
an insecure hub's self-named sites let through with a warning, a study with no delivery failing the command."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.cli import main
from hub.home import HubHome, init_hub
from hub.roster import check_roster, require_delivery
from hub.superlink import write_flwr_config
from protocols.errors import ConfigError, SurgFedError
from protocols.states import SiteState

PROTOCOL = """
study: {{id: roster, version: "1"}}
sites: {sites}
model: {{manifest_sha256: "{sha}"}}
tasks: [phase]
round_plan: {{rounds: 1, deadline_minutes: 10, poll_seconds: 3}}
privacy: {{min_videos: 2}}
"""


def _protocol(tmp_path: Path, sites: list[str]) -> Path:
    path = tmp_path / "roster.yaml"
    path.write_text(PROTOCOL.format(sites=sites, sha="ab" * 32))
    return path


@pytest.fixture
def home(tmp_path: Path) -> HubHome:
    home = init_hub(tmp_path / "hub", public_port=1, internal_port=2)
    home.store().add_site("alpha", 11, None)
    return home


def test_launch_refuses_a_site_that_is_not_registered(
    home: HubHome, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    protocol = _protocol(tmp_path, ["alpha", "gamma"])
    code = main(["launch", "--home", str(home.root), "--protocol", str(protocol)])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1, err
    assert "['gamma'] are not registered" in err and "alpha" in err.split("registered:")[1]
    assert f"hub sites add NAME PUBKEY_FILE --home {home.root}" in err
    assert home.store().study_ids() == []  # refused before anything was registered or started


def test_a_revoked_site_counts_as_unregistered(home: HubHome, tmp_path: Path) -> None:
    home.store().revoke_site("alpha")
    with pytest.raises(ConfigError, match=r"\['alpha'\] are not registered"):
        check_roster(home, _protocol(tmp_path, ["alpha"]))


def test_an_insecure_hub_cannot_check_self_named_sites(tmp_path: Path) -> None:
    home = init_hub(tmp_path / "hub", public_port=1, internal_port=2)
    write_flwr_config(home, insecure=True)  # what `hub serve --insecure` writes
    warnings: list[str] = []
    check_roster(home, _protocol(tmp_path, ["anyone"]), warn=warnings.append)
    assert warnings == ["insecure hub: sites name themselves when they connect, so the roster cannot be checked"]


def test_a_hub_that_is_not_serving_is_named_in_a_warning(home: HubHome, tmp_path: Path) -> None:
    write_flwr_config(home, insecure=False)
    warnings: list[str] = []
    check_roster(home, _protocol(tmp_path, ["alpha"]), warn=warnings.append)
    assert len(warnings) == 1 and warnings[0].startswith("cannot tell which sites are connected: `flwr supernode")


@pytest.mark.parametrize(
    ("states", "fails"),
    [
        ({}, True),
        ({"alpha": SiteState.ABSENT, "beta": SiteState.REFUSED}, True),
        ({"alpha": SiteState.ERROR}, True),
        ({"alpha": SiteState.STORED, "beta": SiteState.ABSENT}, False),
    ],
)
def test_a_launch_with_no_site_delivering_fails(home: HubHome, states: dict[str, SiteState], fails: bool) -> None:
    store = home.store()
    store.new_launch("L1", "roster", "h" * 64)
    for center, state in states.items():
        store.set_job("L1", 0, center, job_id=f"L1-{center}", state=state.value)
    if fails:
        with pytest.raises(SurgFedError, match="ended with no site delivering a result") as err:
            require_delivery(home, "L1")
        for center, state in states.items():
            assert f"{center} {state.value}" in str(err.value)
    else:
        require_delivery(home, "L1")
