"""Certificate expiry as ok / warn / expired with a one-line fix: shared by the hub's and the site's checks."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from cryptography import x509

from protocols.errors import ConfigError

WARN_DAYS = 30  # issue 16: warn a month ahead, time enough to renew and tell every site


class ExpiryState(str, Enum):
    OK = "ok"
    WARN = "warn"
    EXPIRED = "expired"


@dataclass(frozen=True)
class ExpiryCheck:
    """One certificate's validity against a clock: what `doctor` and `hub status` print as one line."""

    label: str
    path: Path
    not_after: dt.datetime
    state: ExpiryState
    days_left: float
    fix: str

    def line(self) -> str:
        when = self.not_after.strftime("%Y-%m-%d %H:%M UTC")
        if self.state is ExpiryState.EXPIRED:
            return f"{self.label} ({self.path}) EXPIRED on {when}: {self.fix}"
        if self.state is ExpiryState.WARN:
            return f"{self.label} ({self.path}) expires in {self.days_left:.0f} days ({when}): {self.fix}"
        return f"{self.label} ({self.path}) valid until {when} ({self.days_left:.0f} days)"


def load_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read certificate {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"{path} is not a PEM certificate: {exc}") from exc


def check_expiry(
    path: Path, label: str, fix: str, *, now: dt.datetime | None = None, warn_days: int = WARN_DAYS
) -> ExpiryCheck:
    """`fix` is the one line an operator runs (e.g. `hub pki renew --home H`); `now` is injectable for tests."""
    return check_certificate(load_certificate(path), Path(path), label, fix, now=now, warn_days=warn_days)


def check_certificate(
    cert: x509.Certificate,
    where: Path,
    label: str,
    fix: str,
    *,
    now: dt.datetime | None = None,
    warn_days: int = WARN_DAYS,
) -> ExpiryCheck:
    """The same for a certificate in hand, e.g. the one a hub presented in a TLS handshake (`where` names it)."""
    moment = now or dt.datetime.now(dt.UTC)
    not_after = cert.not_valid_after_utc
    days_left = (not_after - moment).total_seconds() / 86400
    if days_left <= 0:
        state = ExpiryState.EXPIRED
    elif days_left <= warn_days:
        state = ExpiryState.WARN
    else:
        state = ExpiryState.OK
    return ExpiryCheck(label, where, not_after, state, days_left, fix)
