"""`site_node doctor` against the hub: TLS handshake with the study CA (through the outbound proxy), node key, clock."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import http.client
import json
import ssl
import struct
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from protocols.errors import ConfigError
from site_node.home import SiteConfig, proxy_shown

# What Flower's Fleet API answers to an activation with an out-of-range heartbeat interval: a known key is
# refused for the interval (nothing changes at the hub), an unknown key for itself.
_INVALID_HEARTBEAT, _ACTIVATION_FAILED = 2003, 2004
_UTC = dt.UTC


class KeyState(str, Enum):
    REGISTERED = "registered"
    UNKNOWN = "unknown"  # the hub holds no such node key
    REFUSED = "refused"  # the signature was refused (clock or key format)
    UNCLEAR = "unclear"  # any other answer


@dataclass(frozen=True)
class HubProbe:
    """What one connection to the hub's public port showed."""

    address: str
    via: str | None  # the outbound proxy used, if any
    error: str | None = None  # why no TLS session was made
    server_not_after: dt.datetime | None = None
    skew_seconds: float | None = None  # this machine's clock minus the hub's (HTTP Date)
    key_state: KeyState = KeyState.UNCLEAR
    key_detail: str = ""


def host_port(address: str) -> tuple[str, int]:
    parts = urlsplit(f"//{address}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise ConfigError(f"[hub] superlink must be HOST:PORT, got {address!r}")
    return parts.hostname, port


def _connection(cfg: SiteConfig, timeout: float) -> http.client.HTTPSConnection:
    host, port = host_port(cfg.superlink)
    assert cfg.root_certificates is not None
    ctx = ssl.create_default_context(cafile=str(cfg.root_certificates))
    if not cfg.https_proxy:
        return http.client.HTTPSConnection(host, port, context=ctx, timeout=timeout)
    proxy = urlsplit(cfg.https_proxy)
    conn = http.client.HTTPSConnection(str(proxy.hostname), proxy.port, context=ctx, timeout=timeout)
    headers = {}
    if proxy.username:  # as httpx sends it for a proxy URL with credentials
        user = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}"
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(user.encode()).decode("ascii")
    conn.set_tunnel(host, port, headers)  # CONNECT host:port, then TLS with the hub itself, as the SuperNode does
    return conn


def probe_hub(cfg: SiteConfig, node_key: Path, timeout: float = 10.0) -> HubProbe:
    """Handshake, read the hub's clock from a refused GET, and ask whether it knows this node key."""
    base = HubProbe(cfg.superlink, proxy_shown(cfg.https_proxy) if cfg.https_proxy else None)
    try:
        conn = _connection(cfg, timeout)
        conn.connect()
    except ssl.SSLCertVerificationError as exc:
        return _with(base, error=f"TLS verification failed: {exc.verify_message}")
    except (OSError, ConfigError) as exc:
        return _with(base, error=str(exc) or type(exc).__name__)
    try:
        assert conn.sock is not None
        cert = conn.sock.getpeercert() or {}
        not_after = dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(str(cert["notAfter"])), _UTC)
        before = dt.datetime.now(_UTC)
        conn.request("GET", "/")
        reply = conn.getresponse()
        reply.read()
        after = dt.datetime.now(_UTC)
        date = reply.getheader("date")
        skew = (before + (after - before) / 2 - parsedate_to_datetime(date)).total_seconds() if date else None
        state, detail = _key_state(conn, node_key)
    except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
        return _with(base, error=f"the hub's port answered, then: {exc}")
    finally:
        conn.close()
    return _with(base, server_not_after=not_after, skew_seconds=skew, key_state=state, key_detail=detail)


def _with(base: HubProbe, **changes: Any) -> HubProbe:
    return dataclasses.replace(base, **changes)


def _activation_body(public_pem: bytes) -> bytes:
    """ActivateNodeRequest{public_key=1: bytes, heartbeat_interval=2: double -1.0}, protobuf wire format."""
    n, length = len(public_pem), b""
    while True:
        byte, n = n & 0x7F, n >> 7
        length += bytes([byte | (0x80 if n else 0)])
        if not n:
            break
    return b"\x0a" + length + public_pem + b"\x11" + struct.pack("<d", -1.0)


def _key_state(conn: http.client.HTTPSConnection, node_key: Path) -> tuple[KeyState, str]:
    """A signed activation the hub must refuse either way: the refusal's code says whether it knows the key."""
    key = serialization.load_ssh_private_key(node_key.read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return KeyState.REFUSED, f"{node_key} is not an ECDSA node key"
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    stamp = dt.datetime.now(_UTC).isoformat()
    signature = key.sign(stamp.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    headers = {
        "content-type": "application/protobuf",
        "accept": "application/protobuf",
        "flwr-public-key": base64.b64encode(pem).decode("ascii"),
        "flwr-timestamp": stamp,
        "flwr-signature": base64.b64encode(signature).decode("ascii"),
    }
    conn.request("POST", "/v1/fleet/activate-node", body=_activation_body(pem), headers=headers)
    reply = conn.getresponse()
    body = reply.read()
    try:
        code = json.loads(body).get("code")
    except (ValueError, AttributeError):
        code = None
    if code == _INVALID_HEARTBEAT:
        return KeyState.REGISTERED, "the hub knows this node key"
    if code == _ACTIVATION_FAILED:
        return KeyState.UNKNOWN, "the hub does not know this node key"
    if reply.status == 401:
        return KeyState.REFUSED, "the hub refused the key's signature (HTTP 401)"
    return KeyState.UNCLEAR, f"unexpected answer HTTP {reply.status}: {body[:80]!r}"
