"""`hub launch`'s roster checks: every protocol site registered, the unconnected ones named, a delivery at the end."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from hub.home import HubHome
from hub.presence import hub_is_insecure, superlink_nodes
from protocols.errors import ConfigError, SurgFedError
from protocols.states import SiteState
from protocols.study import load_protocol

log = logging.getLogger(__name__)


def check_roster(home: HubHome, protocol_file: Path, *, warn: Callable[[str], None] = log.warning) -> None:
    """Refuse a protocol naming an unregistered site; warn for registered sites not connected now."""
    protocol = load_protocol(protocol_file)
    registered = {name: node for node, name in home.store().site_nodes().items()}
    if not registered and hub_is_insecure(home):
        warn("insecure hub: sites name themselves when they connect, so the roster cannot be checked")
        return
    missing = [site for site in protocol.sites if site not in registered]
    if missing:
        raise ConfigError(
            f"{protocol_file}: sites {missing} are not registered at this hub (registered: {sorted(registered)}); "
            f"register each with `hub sites add NAME PUBKEY_FILE --home {home.root}` (PUBKEY_FILE: the site's "
            "secrets/node.key.pub), or remove it from `sites:`"
        )
    try:
        seen = superlink_nodes(home)
    except SurgFedError as exc:
        warn(f"cannot tell which sites are connected: {exc}")
        return
    offline = [site for site in protocol.sites if not (seen.get(registered[site]) and seen[registered[site]].online)]
    if offline:
        warn(
            f"sites {offline} are registered but not connected now; their jobs wait for them until the deadline "
            "(ask each site to run `site_node serve`)"
        )


def require_delivery(home: HubHome, launch_id: str) -> None:
    """Fail the launch command when its study ended without a single site's result stored."""
    jobs = home.store().jobs(launch_id)
    if not any(job["state"] == SiteState.STORED.value for job in jobs):
        states = ", ".join(f"{j['center']} {j['state']}" for j in jobs) or "no site was asked"
        raise SurgFedError(f"launch {launch_id} ended with no site delivering a result ({states})")
