"""The Fleet-only filter: a case table of paths and methods that must be refused or passed."""

from __future__ import annotations

import pytest

from hub.fleet_proxy import allowed


@pytest.mark.parametrize(
    ("method", "path", "ok"),
    [
        ("POST", "/v1/fleet/pull-messages", True),
        ("POST", "/v1/fleet/register-node", True),
        ("GET", "/v1/fleet/pull-messages", False),
        ("POST", "/v1/control/list-runs", False),
        ("POST", "/v1/control/start-run", False),
        ("POST", "/v1/runtime/pull-messages", False),
        ("POST", "/v1/fleet/../control/list-runs", False),
        ("POST", "/v1/fleet/%2e%2e/control/list-runs", False),
        ("POST", "//v1/control/list-runs", False),
        ("POST", "/V1/fleet/pull-messages", False),
        ("POST", "/v1/fleetx/pull-messages", False),
        ("POST", "/v1/fleet/", False),
        ("POST", "/v1/fleet/a/b", False),
        ("POST", "/", False),
    ],
)
def test_only_fleet_posts_pass(method: str, path: str, ok: bool) -> None:
    assert allowed(method, path) is ok
