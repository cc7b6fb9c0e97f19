"""Certificate expiry states against an injected clock: ok, warn within 30 days, expired; the line names the fix."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from hub.pki import make_ca
from protocols.cert_expiry import ExpiryState, check_expiry
from protocols.errors import ConfigError


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ca")
    make_ca(d / "ca.crt", d / "ca.key", "expiry", days=100)
    return d / "ca.crt"


@pytest.mark.parametrize(
    ("days_from_now", "state", "in_line"),
    [
        (0, ExpiryState.OK, "valid until"),
        (69, ExpiryState.OK, "valid until"),
        (71, ExpiryState.WARN, "expires in 29 days"),
        (99.9, ExpiryState.WARN, "expires in 0 days"),
        (100.1, ExpiryState.EXPIRED, "EXPIRED on"),
    ],
)
def test_states_by_clock(ca: Path, days_from_now: float, state: ExpiryState, in_line: str) -> None:
    now = dt.datetime.now(dt.UTC) + dt.timedelta(days=days_from_now)
    check = check_expiry(ca, "study CA", "run the fix", now=now)
    assert check.state is state
    assert in_line in check.line()
    assert ("run the fix" in check.line()) is (state is not ExpiryState.OK)


def test_unreadable_or_not_a_certificate(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read certificate"):
        check_expiry(tmp_path / "missing.crt", "x", "y")
    (tmp_path / "junk.crt").write_text("not a certificate")
    with pytest.raises(ConfigError, match="is not a PEM certificate"):
        check_expiry(tmp_path / "junk.crt", "x", "y")
