"""Node key rotation at a site: a new key waits beside the old one until the coordinator confirms it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from protocols.cert_expiry import ExpiryCheck, check_expiry
from protocols.errors import ConfigError
from protocols.keys import fingerprint, new_node_key, read_public_key
from site_node.audit import AuditLog
from site_node.home import SiteHome


def pending_key(home: SiteHome) -> Path:
    return home.secrets_dir / "node.key.next"


def pending_pub(home: SiteHome) -> Path:
    return home.secrets_dir / "node.key.next.pub"


@dataclass(frozen=True)
class Rotation:
    """A pending rotation: the new public key to send, and its fingerprint to read back."""

    site: str
    pub_file: Path
    public_key: str
    fingerprint: str
    current_fingerprint: str
    made_now: bool


def start_rotation(home: SiteHome, *, restart: bool = False) -> Rotation:
    """Steps: keep the current key; make node.key.next (or keep the pending one unless `restart`); describe it."""
    cfg = home.require().config()
    key, pub = pending_key(home), pending_pub(home)
    made = False
    if restart or not (key.is_file() and pub.is_file()):
        key.unlink(missing_ok=True)
        pub.unlink(missing_ok=True)
        new_node_key(key)
        made = True
        AuditLog(home.audit_log).append("node-key-next", fingerprint=fingerprint(pub.read_text()))
    text = read_public_key(pub)
    current = fingerprint(read_public_key(home.node_pub))
    return Rotation(cfg.name, pub, text, fingerprint(text), current, made)


def activate(home: SiteHome, confirmed_fingerprint: str) -> tuple[str, str]:
    """Swap the pending key in once the coordinator read back its fingerprint; returns (old, new) fingerprints.

    The old private key is gone afterwards: the hub has unregistered it, and a kept copy is only a liability.
    """
    home.require()
    key, pub = pending_key(home), pending_pub(home)
    if not (key.is_file() and pub.is_file()):
        raise ConfigError(f"no pending node key in {home.secrets_dir}; start with `site_node keys rotate --home ...`")
    new = fingerprint(read_public_key(pub))
    if confirmed_fingerprint.strip() != new:
        raise ConfigError(
            f"the coordinator confirmed {confirmed_fingerprint.strip()!r}, but the pending key is {new}: "
            "they registered another key; send them secrets/node.key.next.pub again"
        )
    old = fingerprint(read_public_key(home.node_pub))
    os.replace(key, home.node_key)
    os.replace(pub, home.node_pub)
    AuditLog(home.audit_log).append("node-key-activated", old_fingerprint=old, fingerprint=new)
    return old, new


def ca_expiry(home: SiteHome) -> ExpiryCheck | None:
    """The study CA this site trusts, against the clock (for `site_node doctor`); None when none is configured."""
    cfg = home.config()
    if cfg.root_certificates is None:
        return None
    return check_expiry(
        cfg.root_certificates,
        "study CA certificate",
        "ask the study coordinator for the study's new CA certificate",
    )
