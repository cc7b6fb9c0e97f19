"""The hub home: hub.toml, the study CA and server certificate, the SuperLink database and the results store."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.pki import make_ca, make_server_cert
from hub.store import ResultsStore
from protocols.errors import ConfigError

HOME_ENV = "SURGFED_HUB_HOME"

HUB_TOML = """# Hub configuration, written by `hub init` (see README.md, section "At the coordinating center (hub)").
[hub]
study_name = "{study}"

[store]
# SQLAlchemy URL of the results store: SQLite by default, or postgresql://USER:PASSWORD@HOST:PORT/DB.
# Opening the store applies its schema migrations (hub/migrations/).
url = "{store_url}"

[superlink]
# The SuperLink listens on loopback only: its Control API has no login in open-source Flower.
port = {internal_port}

[fleet]
# The public, Fleet-only port the sites dial (TLS terminated by the hub's filtering proxy). `host` is the address
# the sites dial (named in the server certificate); `bind` is the local address the proxy listens on: 0.0.0.0 or
# the hub's own interface address in production (behind NAT, `host` is the router's public name), 127.0.0.1 for
# a hub on one machine.
host = "{public_host}"
bind = "{bind}"
port = {public_port}

[web]
# The dashboard (`hub web`, `hub serve`): loopback by default; put the hospital's TLS reverse proxy in front
# and set public_url to the address people open, so `hub users add` prints links that work.
host = "127.0.0.1"
port = 8780
public_url = ""
"""


@dataclass(frozen=True)
class HubConfig:
    study_name: str
    store_url: str
    internal_port: int
    public_host: str
    public_port: int
    bind: str = "127.0.0.1"
    web_host: str = "127.0.0.1"
    web_port: int = 8780
    web_public_url: str = ""


class HubHome:
    def __init__(self, root: Path, *, store_url: str | None = None) -> None:
        self.root = Path(root).resolve()
        self.store_url = store_url  # `--db URL` wins over hub.toml
        self._store: ResultsStore | None = None

    config_file = property(lambda self: self.root / "hub.toml")
    ca_cert = property(lambda self: self.root / "pki" / "ca.crt")
    ca_key = property(lambda self: self.root / "pki" / "ca.key")
    server_cert = property(lambda self: self.root / "pki" / "server.crt")
    server_key = property(lambda self: self.root / "pki" / "server.key")
    superlink_db = property(lambda self: self.root / "state" / "superlink.db")
    flwr_home = property(lambda self: self.root / "flwr")
    logs_dir = property(lambda self: self.root / "logs")
    adapters_dir = property(lambda self: self.root / "adapters")

    def require(self) -> HubHome:
        if not self.config_file.is_file():
            raise ConfigError(f"{self.root} is not a hub home (no hub.toml); run `hub init --home {self.root}`")
        return self

    def config(self) -> HubConfig:
        self.require()
        try:
            data: dict[str, Any] = tomllib.loads(self.config_file.read_text(encoding="utf-8"))
            web, fleet = data.get("web", {}), data["fleet"]
            return HubConfig(
                study_name=str(data["hub"]["study_name"]),
                # [store] url; hub homes made before it name the store in [hub] store_url
                store_url=str(data["store"]["url"] if "store" in data else data["hub"]["store_url"]),
                internal_port=int(data["superlink"]["port"]),
                public_host=str(fleet["host"]),
                public_port=int(fleet["port"]),
                # hub homes made before `bind` listened on their public host
                bind=str(fleet.get("bind", fleet["host"])),
                web_host=str(web.get("host", "127.0.0.1")),
                web_port=int(web.get("port", 8780)),
                web_public_url=str(web.get("public_url", "")),
            )
        except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{self.config_file}: {exc}") from exc

    def store(self) -> ResultsStore:
        """The results store, opened (and migrated) once per HubHome."""
        if self._store is None:
            self._store = ResultsStore(self.store_url or self.config().store_url)
        return self._store


def init_hub(
    root: Path,
    *,
    study: str = "surgfed",
    public_host: str = "127.0.0.1",
    public_port: int = 9092,
    internal_port: int = 9093,
    bind: str = "127.0.0.1",
    hosts: list[str] | None = None,
    store_url: str | None = None,
) -> HubHome:
    home = HubHome(root)
    if home.config_file.exists():
        raise ConfigError(f"{home.config_file} already exists; refusing to overwrite a hub home")
    for d in (home.ca_cert.parent, home.superlink_db.parent, home.flwr_home, home.logs_dir):
        d.mkdir(parents=True, exist_ok=True)
    home.ca_cert.parent.chmod(0o700)
    make_ca(home.ca_cert, home.ca_key, study)
    # The address the sites dial is always in the certificate; --san adds more (e.g. an internal name).
    make_server_cert(home.ca_cert, home.ca_key, home.server_cert, home.server_key, [public_host, *(hosts or [])])
    home.config_file.write_text(
        HUB_TOML.format(
            study=study,
            store_url=store_url or f"sqlite:///{home.root / 'state' / 'results.db'}",
            internal_port=internal_port,
            public_host=public_host,
            public_port=public_port,
            bind=bind,
        )
    )
    home.config()
    return home
