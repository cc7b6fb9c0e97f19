"""`hub web` (the dashboard alone, e.g. for a finished study) and `hub users add|list` (dashboard accounts)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from hub.home import HubHome


def login_link(home: HubHome, token: str) -> str:
    cfg = home.config()
    base = cfg.web_public_url.rstrip("/") or f"http://{cfg.web_host}:{cfg.web_port}"
    return f"{base}/login?token={token}"


def cmd_web(args: argparse.Namespace, home: HubHome) -> int:
    from hub.web.app import run_web

    cfg = home.config()
    return run_web(home, args.host or cfg.web_host, args.port or cfg.web_port)


def cmd_users_add(args: argparse.Namespace, home: HubHome) -> int:
    from hub.accounts import Accounts, UserRole

    token = Accounts(home.store()).add_user(args.name, UserRole.parse(args.role))
    print(f"user {args.name} ({args.role}); one-time login link, valid 7 days:\n{login_link(home, token)}")
    return 0


def cmd_users_list(args: argparse.Namespace, home: HubHome) -> int:
    from hub.accounts import Accounts

    for user in Accounts(home.store()).list_users():
        print(f"{user['name']}\t{user['role']}")
    return 0


def add_commands(sub: Any, common: argparse.ArgumentParser, bind: Callable[..., Any]) -> None:
    """Register the subcommands; `bind(fn)` wraps a handler taking (args, home) into the CLI's (args) form."""
    p = sub.add_parser("web", parents=[common], help="serve the dashboard and JSON API alone (127.0.0.1)")
    p.add_argument("--host", help="address to bind (default [web] host in hub.toml: 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default [web] port in hub.toml)")
    p.set_defaults(func=bind(cmd_web))
    users = sub.add_parser("users", help="dashboard accounts").add_subparsers(dest="ucmd", required=True)
    p = users.add_parser("add", parents=[common], help="add a user and print a one-time login link")
    p.add_argument("name", help="the account name (shown in the dashboard and its write log)")
    p.add_argument(
        "--role",
        choices=["coordinator", "viewer"],
        required=True,
        help="coordinators launch and cancel; viewers only look",
    )
    p.set_defaults(func=bind(cmd_users_add))
    users.add_parser("list", parents=[common], help="list users").set_defaults(func=bind(cmd_users_list))
