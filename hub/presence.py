"""Which site nodes the SuperLink sees now, and when each was last seen (from `flwr supernode list`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from hub.home import HubHome
from hub.superlink import CONNECTION, flwr


class NodeStatus(str, Enum):
    """Flower's node states, as `flwr supernode list` names them."""

    REGISTERED = "registered"  # key registered, never connected
    ONLINE = "online"
    OFFLINE = "offline"
    UNREGISTERED = "unregistered"


@dataclass(frozen=True)
class NodeSeen:
    node_id: int
    status: NodeStatus
    online_at: str | None  # UTC, "YYYY-MM-DD HH:MM:SSZ": when it last connected
    offline_at: str | None  # when it last went away

    @property
    def online(self) -> bool:
        return self.status is NodeStatus.ONLINE

    @property
    def last_seen(self) -> str | None:
        """Now when online (None: the caller prints "now"), else when it went offline, else never."""
        return None if self.online else self.offline_at or self.online_at


def _time(value: object) -> str | None:
    return None if value in (None, "", "N/A") else str(value)


def superlink_nodes(home: HubHome) -> dict[int, NodeSeen]:
    """Every node the SuperLink knows; raises SurgFedError when it does not answer (`hub serve` not running)."""
    data = flwr(home, ["supernode", "list", CONNECTION], timeout=60)
    nodes = {}
    for row in data.get("nodes", []):
        try:
            status = NodeStatus(row["status"])
        except ValueError:
            continue  # a state of a newer Flower: not one we can act on
        node = NodeSeen(int(row["node-id"]), status, _time(row.get("online-at")), _time(row.get("offline-at")))
        nodes[node.node_id] = node
    return nodes


def hub_is_insecure(home: HubHome) -> bool:
    """Whether `hub serve --insecure` wrote the connection: then sites name themselves and none are registered."""
    config = home.flwr_home / "config.toml"
    return config.is_file() and "insecure = true" in config.read_text()
