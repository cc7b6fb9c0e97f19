"""`hub studies list` and `hub study show|cancel|extend|rerun`: the study lifecycle from the terminal."""

from __future__ import annotations

import argparse
import getpass
import time
from collections.abc import Callable
from typing import Any

from hub.home import HubHome
from protocols.durations import show_minutes


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(stamp)) if stamp else "-"


def _user() -> str:
    return f"{getpass.getuser()} (cli)"


def cmd_studies_list(args: argparse.Namespace, home: HubHome) -> int:
    from hub.studies import list_studies

    rows = list_studies(home)
    if not rows:
        print("no studies yet; register one with `hub launch --protocol FILE`")
    for row in rows:
        print(f"{row['study_id']}\t{row['state']}\t{row['stored']}/{row['jobs']} site jobs stored\t{row['launch_id']}")
    return 0


def cmd_study_show(args: argparse.Namespace, home: HubHome) -> int:
    from hub.studies import show_study

    shown = show_study(home, args.study)
    launch = shown["launch"]
    print(f"study {args.study}: {shown['study']['title']}")
    print(f"launch {launch['launch_id']}: {launch['state']}{' - ' + launch['detail'] if launch['detail'] else ''}")
    for step in shown["rounds"]:
        closed = f"closed {_when(step['closed_at'])} ({step['close_reason']})" if step["closed_at"] else "open"
        print(f"round {step['round']} {step['kind']}: deadline {_when(step['deadline_at'])}, {closed}")
    for job in shown["jobs"]:
        detail = f" - {job['detail']}" if job["detail"] else ""
        print(f"  round {job['round']} {job['kind']} {job['center']}: {job['state']}{detail} [job {job['job_id']}]")
    return 0


def cmd_study_cancel(args: argparse.Namespace, home: HubHome) -> int:
    from hub.studies import cancel_study

    for launch_id in cancel_study(home, args.study, by=_user()):
        print(f"launch {launch_id} of study {args.study} cancelled; its sites are not asked any more")
    return 0


def cmd_study_extend(args: argparse.Namespace, home: HubHome) -> int:
    from hub.studies import extend_round

    for deadline in extend_round(home, args.study, args.round, args.by, user=_user()):
        print(f"study {args.study} round {args.round}: deadline now {_when(deadline)}")
    return 0


def cmd_study_rerun(args: argparse.Namespace, home: HubHome) -> int:
    from hub.studies import rerun_sites

    sites = [s.strip() for s in args.sites.split(",") if s.strip()]
    asked = rerun_sites(home, args.study, args.round, sites, user=_user(), by=args.by)
    for site, job_id in asked.items():
        print(f"study {args.study} round {args.round}: {site} asked again as job {job_id}")
    print(f"`hub serve` runs it; deadline {args.by or 'as the protocol says'} from now")
    return 0


def add_commands(sub: Any, common: argparse.ArgumentParser, bind: Callable[..., Any]) -> None:
    """Register the subcommands; `bind(fn)` wraps a handler taking (args, home) into the CLI's (args) form."""
    studies = sub.add_parser("studies", help="studies in the store").add_subparsers(dest="stcmd", required=True)
    studies.add_parser("list", parents=[common], help="every study, its newest launch and state").set_defaults(
        func=bind(cmd_studies_list)
    )
    study = sub.add_parser("study", help="one study's lifecycle").add_subparsers(dest="scmd", required=True)
    p = study.add_parser("show", parents=[common], help="a study's rounds, deadlines and site jobs")
    p.add_argument("study", metavar="ID", help="the protocol's study.id (see `hub studies list`)")
    p.set_defaults(func=bind(cmd_study_show))
    p = study.add_parser("cancel", parents=[common], help="stop asking the sites of a pending or running study")
    p.add_argument("study", metavar="ID", help="the protocol's study.id")
    p.set_defaults(func=bind(cmd_study_cancel))
    p = study.add_parser("extend", parents=[common], help="move an open round's deadline later")
    p.add_argument("study", metavar="ID", help="the protocol's study.id")
    p.add_argument("--round", type=int, required=True, help="the round whose deadline moves")
    p.add_argument("--by", required=True, help="how much later: 14d, 36h or 90m")
    p.set_defaults(func=bind(cmd_study_extend))
    p = study.add_parser("rerun", parents=[common], help="ask missing, absent or failed sites of an ended round again")
    p.add_argument("study", metavar="ID", help="the protocol's study.id")
    p.add_argument("--round", type=int, required=True, help="the round to ask again")
    p.add_argument("--sites", required=True, help="comma-separated site names (never one whose result is stored)")
    p.add_argument(
        "--by", help=f"the reopened round's deadline from now (default: the protocol's, e.g. {show_minutes(60)})"
    )
    p.set_defaults(func=bind(cmd_study_rerun))
