"""Site policy: defaults, typed values, unknown keys refused, and the generated site.toml carries it."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocols.errors import ConfigError
from site_node.home import init_home
from site_node.policy import SitePolicy, parse_policy


def test_defaults_when_absent() -> None:
    policy = parse_policy(None)
    assert policy == SitePolicy()
    assert policy.require_dp and policy.min_train_videos == 10 and policy.min_videos == 5


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"min_videos": True}, "min_videos must be an integer"),
        ({"min_videos": 2.5}, "min_videos must be an integer"),
        ({"min_videos": 0}, "min_videos must be an integer in [1"),
        ({"require_dp": 1}, "require_dp must be true or false"),
        ({"epsilon_cap": -1}, "epsilon_cap must be a number in [0.0"),
        ({"allowed_tasks": "phase"}, "allowed_tasks must be a list"),
        ({"max_rounds": 0}, "max_rounds must be an integer in [1"),
        ({"min_video": 5}, "unknown keys ['min_video']"),
    ],
)
def test_bad_values_name_the_field_and_value(table: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_policy(table)
    assert message in str(err.value)


def test_protocol_may_tighten_never_loosen() -> None:
    policy = parse_policy({"min_videos": 8, "allowed_tasks": ["phase"]})
    assert policy.cell_floor(3) == 8 and policy.cell_floor(12) == 12
    assert policy.allows_task("phase") and not policy.allows_task("cvs")


def test_new_site_home_states_the_policy(tmp_path: Path) -> None:
    home = init_home(tmp_path / "site", "alpha")
    assert "[policy]" in home.config_file.read_text()
    assert home.config().policy == SitePolicy()
