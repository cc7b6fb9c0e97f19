"""`site_node console [login]` and `site_node status [--json]`: the console's server, its login links, its status."""

from __future__ import annotations

import argparse
import getpass
import json

from protocols.errors import ConfigError, UsageError
from protocols.procs import port_open
from site_node.home import SiteHome


def _home(args: argparse.Namespace) -> SiteHome:
    if args.home is None:
        raise UsageError("no site home: pass --home DIR or set SURGFED_SITE_HOME")
    return SiteHome(args.home).require()


def cmd_console(args: argparse.Namespace) -> int:
    """Steps: read the port, refuse a taken one, serve until Ctrl-C or SIGTERM."""
    from site_node.console.app import HOST, console_server, console_url

    home = _home(args)
    port = args.port or home.config().console_port
    if port_open(HOST, port):
        raise ConfigError(f"port {port} on {HOST} is taken (is `site_node serve` running the console already?)")
    server = console_server(home, port)
    print(f"site console on {console_url(home, port)}/ (sign in with a `site_node console login` link)", flush=True)
    server.run()  # handles SIGINT/SIGTERM itself
    return 0 if server.started else 1


def login_link(home: SiteHome, name: str, role: str, port: int | None = None) -> str:
    """A one-time link for `name`, to the console that runs now (serve's) or the configured one."""
    from site_node.console import heartbeat
    from site_node.console.accounts import ConsoleAccounts, Role
    from site_node.console.app import console_url

    token = ConsoleAccounts(home.console_dir).new_login(name, Role(role))
    state = heartbeat.read(home.logs_dir)
    if port:
        base = console_url(home, port)
    elif state is not None and state.console_url:
        base = state.console_url
    else:
        base = console_url(home, home.config().console_port)
    return f"{base}/login?token={token}"


def cmd_login(args: argparse.Namespace) -> int:
    link = login_link(_home(args), args.user, args.role, args.port)
    print(f"one-time console login for {args.user} ({args.role}), valid 24 hours:\n{link}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from site_node.console.status import site_status, status_lines

    status = site_status(_home(args))
    print(json.dumps(status, indent=2, sort_keys=True) if args.json else "\n".join(status_lines(status)))
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `console`, `console login` and `status` to the site_node command line."""
    p = sub.add_parser("console", parents=[common], help="serve the data owner's console on 127.0.0.1")
    p.add_argument("--port", type=int, help="port (default: site.toml [console] port)")
    p.set_defaults(func=cmd_console)
    csub = p.add_subparsers(dest="ccmd", required=False)
    p = csub.add_parser("login", parents=[common], help="print a one-time console login link")
    p.add_argument("--user", default=getpass.getuser(), help="the operator's name, written to the audit log")
    p.add_argument(
        "--role",
        choices=["owner", "viewer"],
        default="owner",
        help="owner: approves and rejects protocols and releases; viewer: reads every page",
    )
    p.add_argument("--port", type=int, help="the console's port when it is not the one serve or site.toml uses")
    p.set_defaults(func=cmd_login)
    p = sub.add_parser("status", parents=[common], help="is serve running, the hub, model, sandbox, storage")
    p.add_argument("--json", action="store_true", help="as JSON (for monitoring)")
    p.set_defaults(func=cmd_status)
