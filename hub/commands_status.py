"""`hub status [--study ID] [--json]`: the hub's and every site's state as a table, or as stable JSON."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from hub.home import HubHome
from hub.status import Status, collect


def _yes(value: bool | None) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


def render(status: Status) -> str:
    """The table a coordinator reads in a terminal; `--json` has the same facts for scripts."""
    hub = status.hub
    lines = [
        f"hub: SuperLink {'up' if hub.superlink_up else 'DOWN'}, Fleet proxy on {hub.proxy_address} "
        f"{'up' if hub.proxy_up else 'DOWN'}",
        "open studies: "
        + (", ".join(f"{s['study']} (launch {s['launch']}, {s['state']})" for s in hub.open_studies) or "none"),
    ]
    for cert in hub.certificates:
        names = f" for {', '.join(cert.names)}" if cert.names else ""
        warn = "  RENEW SOON" if cert.days_left < 30 else ""
        lines.append(f"certificate {cert.name}{names}: expires {cert.not_after} ({cert.days_left} days){warn}")
    lines.append("")
    lines.append("site\tregistered\tconnected\tlast seen\tsoftware\tcontract")
    for site in status.sites:
        lines.append(
            f"{site.name}\t{_yes(site.registered)}\t{_yes(site.connected)}\t{site.last_seen or 'never'}\t"
            f"{site.software_version or 'unknown'}\t{site.contract_version or 'unknown'}"
        )
        for job in site.jobs:
            why = f" ({job.reason})" if job.reason else (f" ({job.detail})" if job.detail else "")
            lines.append(f"  {job.study} round {job.round} {job.kind}: {job.state}{why}")
    if not status.sites:
        lines.append("(no sites registered and no site jobs yet: `hub sites add NAME PUBKEY_FILE`)")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace, home: HubHome) -> int:
    status = collect(home, args.study)
    print(json.dumps(asdict(status), indent=2) if args.json else render(status))
    return 0


def add_commands(sub: Any, common: argparse.ArgumentParser, bind: Callable[..., Any]) -> None:
    p = sub.add_parser("status", parents=[common], help="where the hub and every site stand (docs/status.md)")
    p.add_argument("--study", help="show this study's latest launch (default: the latest launch of every study)")
    p.add_argument("--json", action="store_true", help="print the stable JSON form (schema_version, docs/status.md)")
    p.set_defaults(func=bind(cmd_status))
