"""`site_node policy show`: the site policy in force and the state of the site-wide privacy ledger."""

from __future__ import annotations

import argparse
import math

from site_node.audit import AuditLog
from site_node.home import SiteHome


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    policy = sub.add_parser("policy", help="the site policy every job obeys").add_subparsers(dest="pcmd", required=True)
    p = policy.add_parser("show", parents=[common], help="print the policy in force and the privacy ledger's state")
    p.set_defaults(func=cmd_policy_show)


def cmd_policy_show(args: argparse.Namespace) -> int:
    """Steps: read site.toml's [policy] (validated), verify the ledger against its audit mirror, print both."""
    from site_node.finetune_jobs import LEDGER_FILE
    from site_node.training.ledger import SiteLedger, unit_epsilons

    home = SiteHome(args.home).require()
    config = home.config()
    print(f"[policy] of {home.config_file}")
    for name, value in config.policy.as_dict().items():
        shown = str(value).lower() if isinstance(value, bool) else list(value) if isinstance(value, tuple) else value
        print(f"{name} = {shown}")
    if config.epsilon_budget is not None:
        print(f"[privacy] epsilon_budget = {config.epsilon_budget}  (per study)")
    rounds = SiteLedger(home.root / LEDGER_FILE, AuditLog(home.audit_log)).rounds()  # LedgerTampered if broken
    units = sorted({u for r in rounds for u in r.units})
    spent = unit_epsilons(rounds, units, 1e-5).values()
    worst = max(spent, default=0.0)
    shown = "unbounded (trained without DP)" if math.isinf(worst) else f"{worst:.3f} (at delta 1e-5)"
    print(
        f"privacy ledger: {len(rounds)} rounds over {len(units)} videos, verified against the audit log; "
        f"highest epsilon of one video: {shown}"
    )
    return 0
