"""`hub status`: where every site and the hub stand, from the store, the SuperLink and the certificates."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from hub.home import HubHome
from hub.presence import NodeSeen, superlink_nodes
from protocols.contract import CONTRACT_VERSION, Reason
from protocols.errors import SurgFedError
from protocols.procs import port_open
from protocols.states import LaunchState, SiteState

# Bump when a field is renamed, removed or changes meaning; adding a field keeps the version (docs/status.md).
SCHEMA_VERSION = 1
_REASONS = {r.value for r in Reason}
_UTC = "%Y-%m-%dT%H:%M:%SZ"


def _utc(seconds: float | None) -> str | None:
    return None if seconds is None else time.strftime(_UTC, time.gmtime(seconds))


@dataclass(frozen=True)
class JobStatus:
    study: str
    launch: str
    round: int
    kind: str  # evaluate | train
    state: str  # protocols.states.SiteState
    reason: str | None  # the site's reason code (protocols.contract.Reason) when it failed or refused
    detail: str | None  # the hub's own note (never the site's free text: none leaves a site)
    updated_at: str | None


@dataclass(frozen=True)
class SiteStatus:
    name: str
    registered: bool  # an active key registration (`hub sites add`), not revoked
    node_id: str | None
    connected: bool | None  # None: the SuperLink did not answer, so nobody knows
    last_seen: str | None  # "now" when connected, else when the SuperLink last saw it go, else None (never)
    software_version: str | None  # as the site reported with its last stored result; None: not reported yet
    contract_version: int | None  # the message contract its last stored result was checked against
    jobs: list[JobStatus] = field(default_factory=list)


@dataclass(frozen=True)
class CertStatus:
    name: str  # ca | server
    path: str
    not_after: str
    days_left: int
    names: list[str]  # the server certificate's DNS names and IP addresses (empty for the CA)


@dataclass(frozen=True)
class HubState:
    superlink_up: bool
    proxy_up: bool
    proxy_address: str
    open_studies: list[dict[str, str]]  # {study, launch, state}
    certificates: list[CertStatus]


@dataclass(frozen=True)
class Status:
    schema_version: int
    generated_at: str
    hub: HubState
    sites: list[SiteStatus]


def certificate(name: str, path: Path, now: dt.datetime) -> CertStatus:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [*san.get_values_for_type(x509.DNSName), *map(str, san.get_values_for_type(x509.IPAddress))]
    except x509.ExtensionNotFound:
        names = []
    end = cert.not_valid_after_utc
    return CertStatus(name, str(path), end.strftime(_UTC), (end - now).days, names)


def hub_state(home: HubHome, launches: list[dict[str, Any]]) -> HubState:
    cfg = home.config()
    proxy_host = "127.0.0.1" if cfg.bind in ("0.0.0.0", "::", "") else cfg.bind  # a wildcard answers on loopback
    now = dt.datetime.now(dt.UTC)
    certs = [certificate(n, p, now) for n, p in (("ca", home.ca_cert), ("server", home.server_cert)) if p.is_file()]
    return HubState(
        superlink_up=port_open("127.0.0.1", cfg.internal_port),
        proxy_up=port_open(proxy_host, cfg.public_port),
        proxy_address=f"{cfg.bind}:{cfg.public_port}",
        open_studies=[
            {"study": r["study_id"], "launch": r["launch_id"], "state": r["state"]}
            for r in launches
            if LaunchState(r["state"]).open
        ],
        certificates=certs,
    )


def _reason(state: SiteState, detail: str | None) -> str | None:
    """The coordinator stores a site's reason code as the first word of the job's detail."""
    word = (detail or "").split(" ", 1)[0]
    return word if state in (SiteState.FAILED, SiteState.REFUSED, SiteState.REJECTED) and word in _REASONS else None


def _job(study: str, row: dict[str, Any]) -> JobStatus:
    state = SiteState(row["state"])
    return JobStatus(
        study,
        row["launch_id"],
        int(row["round"]),
        row["kind"],
        state.value,
        _reason(state, row["detail"]),
        row["detail"],
        _utc(row["updated_at"]),
    )


def shown_launches(store: Any, study: str | None) -> list[dict[str, Any]]:
    """The latest launch of the asked study, or of every study (newest first)."""
    studies = [study] if study is not None else store.study_ids()
    if study is not None:
        store.study(study)  # an unknown id fails here, naming the known ones
    latest = [rows[0] for s in studies if (rows := store.launches_of(s))]
    return sorted(latest, key=lambda r: r["started_at"], reverse=True)


def _presence(node: NodeSeen | None, nodes_known: bool) -> tuple[bool | None, str | None]:
    if not nodes_known:
        return None, None
    if node is None:
        return False, None
    return node.online, "now" if node.online else node.last_seen


def collect(home: HubHome, study: str | None = None) -> Status:
    """Everything `hub status` shows; the SuperLink is asked only when it listens (else connected is None)."""
    store = home.store()
    launches = shown_launches(store, study)
    hub = hub_state(home, [r for s in store.study_ids() for r in store.launches_of(s)])
    nodes: dict[int, NodeSeen] = {}
    nodes_known = hub.superlink_up
    if nodes_known:
        try:
            nodes = superlink_nodes(home)
        except SurgFedError:
            nodes_known = False
    jobs: dict[str, list[JobStatus]] = {}
    for launch in launches:
        for row in store.jobs(launch["launch_id"]):
            jobs.setdefault(row["center"], []).append(_job(launch["study_id"], row))
    sites = {s["name"]: s for s in store.list_sites()}
    versions = _versions(store, [*sites, *jobs])
    out = []
    for name in sorted({*sites, *jobs}):
        reg = sites.get(name)
        registered = reg is not None and reg["revoked_at"] is None and reg["node_id"] is not None
        node_id = reg["node_id"] if registered and reg is not None else None
        seen = nodes.get(int(node_id)) if node_id is not None else None
        connected, last_seen = _presence(seen, nodes_known and registered)
        software = versions.get(name)
        out.append(
            SiteStatus(
                name,
                registered,
                node_id,
                connected,
                last_seen,
                software,
                CONTRACT_VERSION if software is not None else None,
                jobs.get(name, []),
            )
        )
    return Status(SCHEMA_VERSION, _utc(time.time()) or "", hub, out)


def _versions(store: Any, names: list[str]) -> dict[str, str]:
    """Each site's software version from its newest stored result (only stored results carry one)."""
    found: dict[str, tuple[float, str]] = {}
    for s in store.study_ids():
        for row in store.jobs_for_study(s):
            version = row["software_version"]
            if (
                version
                and version != "None"
                and row["center"] in names
                and row["updated_at"] > found.get(row["center"], (0.0, ""))[0]
            ):
                found[row["center"]] = (row["updated_at"], version)
    return {name: v for name, (_, v) in found.items()}
