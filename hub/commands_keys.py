"""`hub sites rotate` (a site's new node key) and `hub pki renew|status` (the server certificate, same CA)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hub.home import HubHome
from protocols.cert_expiry import ExpiryState
from protocols.errors import ConfigError, SurgFedError
from protocols.keys import fingerprint


def rotate_site(home: HubHome, name: str, pubkey: Path) -> tuple[int, int | None]:
    """Steps: validate the key, find the active site, register the new key, point the site at it, drop the old.

    Returns (new node id, old node id). The site's name and its results stay; only its node key changes.
    """
    from hub.superlink import register_node, unregister_node
    from protocols.keys import read_public_key

    key = read_public_key(pubkey)
    store = home.store()
    active = [s for s in store.list_sites() if s["name"] == name and not s["revoked_at"]]
    if not active:
        raise ConfigError(f"no active site named {name!r}; see `hub sites list` (a revoked site needs `hub sites add`)")
    if active[0]["public_key"] == key:
        raise ConfigError(f"{pubkey} is already the registered key of {name}; the site must send its NEW key")
    old = None if active[0]["node_id"] is None else int(active[0]["node_id"])
    new = register_node(home, name, pubkey)
    store.add_site(name, new, key)
    if old is not None:
        try:
            unregister_node(home, old)
        except SurgFedError as exc:  # the store already names the new node; say what is left to do
            raise SurgFedError(
                f"{name} now uses node {new}, but unregistering its old node {old} failed: {exc}; "
                f"retry with `flwr supernode unregister {old}` against the hub's SuperLink"
            ) from exc
    return new, old


def cmd_sites_rotate(args: argparse.Namespace, home: HubHome) -> int:
    new, old = rotate_site(home, args.name, args.pubkey)
    key = args.pubkey.read_text().strip()
    print(f"site {args.name}: new node key {fingerprint(key)} registered as node {new}")
    if old is not None:
        print(f"old node {old} unregistered: the site's old key is refused from now on")
    print(
        f"tell {args.name}'s operator the key is confirmed (read them the fingerprint above); they run:\n"
        f"  site_node keys activate --home SITE_HOME --fingerprint {fingerprint(key)}\n"
        "and restart `site_node serve`; until then the site is offline, and an open study waits for it until "
        "its deadline"
    )
    return 0


def cmd_pki_renew(args: argparse.Namespace, home: HubHome) -> int:
    from hub.pki import renew_server_cert

    cert = renew_server_cert(home.ca_cert, home.ca_key, home.server_cert, home.server_key, args.san or None, args.days)
    print(
        f"new server certificate {home.server_cert} (serial {cert.serial_number:x}), valid until "
        f"{cert.not_valid_after_utc:%Y-%m-%d}, signed by the same study CA: sites change nothing.\n"
        "A running `hub serve` presents it on the public port within seconds; its loopback SuperLink uses it "
        "from the next restart of `hub serve`."
    )
    return 0


def cmd_pki_status(args: argparse.Namespace, home: HubHome) -> int:
    from hub.pki import certificate_checks

    checks = certificate_checks(home.ca_cert, home.server_cert, home.root)
    for check in checks:
        print(f"{check.state.value}\t{check.line()}")
    return 1 if any(c.state is ExpiryState.EXPIRED for c in checks) else 0


def add_commands(
    sub: Any, sites: Any, common: argparse.ArgumentParser, bind: Callable[[Callable[..., int]], Any]
) -> None:
    """Register `sites rotate` under the existing `sites` group and the `pki` group."""
    p = sites.add_parser("rotate", parents=[common], help="replace a site's node key (the site sent its new .pub)")
    p.add_argument("name", help="the site's registered name (as in `hub sites list`)")
    p.add_argument(
        "pubkey",
        type=Path,
        metavar="NEW_PUBKEY_FILE",
        help="FILE with the site's NEW public key (secrets/node.key.next.pub from `site_node keys rotate`)",
    )
    p.set_defaults(func=bind(cmd_sites_rotate))
    pki = sub.add_parser("pki", help="the hub's TLS server certificate").add_subparsers(dest="pcmd", required=True)
    p = pki.add_parser("renew", parents=[common], help="a new server certificate and key from the same study CA")
    p.add_argument("--days", type=int, default=825, help="validity of the new certificate (capped at the CA's)")
    p.add_argument(
        "--san", action="append", help="host name or IP for the certificate (repeatable; default: the current ones)"
    )
    p.set_defaults(func=bind(cmd_pki_renew))
    p = pki.add_parser(
        "status", parents=[common], help="expiry of the server and CA certificates (warns 30 days ahead)"
    )
    p.set_defaults(func=bind(cmd_pki_status))
