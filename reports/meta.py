"""Study provenance for the methods paragraph: protocol, model and adapter hashes, rounds, sites."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SiteInfo:
    """One site as the hub's store knows it; `release` is its release-gate setting in words."""

    center: str
    software_version: str | None = None
    release: str | None = None


@dataclass
class StudyMeta:
    """Everything the methods paragraph states, read from the hub's store by `hub report`."""

    study: str
    protocol_id: str
    protocol_version: str
    protocol_hash: str
    model_hash: str
    adapter_hashes: dict[int, str] = field(default_factory=dict)
    round_dates: dict[int, str] = field(default_factory=dict)
    sites: list[SiteInfo] = field(default_factory=list)
    package_version: str = ""
    bootstrap_replicates: int | None = None  # the protocol's privacy.bootstrap_replicates
