"""`hub` command line: init, serve, sites, launch, report, demo; known errors become one line and an exit code."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hub.home import HOME_ENV, HubHome
from protocols.cli_help import use_defaults_formatter
from protocols.errors import SurgFedError, UsageError


def _home(args: argparse.Namespace) -> HubHome:
    if args.home is None:
        raise UsageError(f"no hub home: pass --home DIR or set {HOME_ENV}")
    return HubHome(args.home, store_url=getattr(args, "db", None))


def cmd_init(args: argparse.Namespace) -> int:
    from hub.home import init_hub

    home = init_hub(
        _home(args).root,
        study=args.study,
        public_host=args.host,
        public_port=args.port,
        internal_port=args.internal_port,
        bind=args.bind,
        hosts=args.san or None,
        store_url=args.db,
    )
    print(f"hub home created: {home.root}\nstudy CA for the sites: {home.ca_cert}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from hub.serve import serve

    return serve(_home(args).require(), insecure=args.insecure, web_port=args.web_port)


def cmd_sites_add(args: argparse.Namespace) -> int:
    from hub.superlink import register_node
    from protocols.keys import read_public_key

    home = _home(args).require()
    key = read_public_key(args.pubkey)
    node_id = register_node(home, args.name, args.pubkey)
    home.store().add_site(args.name, node_id, key)
    print(f"site {args.name} registered as node {node_id}")
    return 0


def cmd_sites_remove(args: argparse.Namespace) -> int:
    from hub.superlink import unregister_node

    home = _home(args).require()
    node_id = home.store().revoke_site(args.name)
    if node_id is not None:
        unregister_node(home, node_id)
    print(f"site {args.name} revoked")
    return 0


def cmd_sites_list(args: argparse.Namespace) -> int:
    for site in _home(args).require().store().list_sites():
        state = "revoked" if site["revoked_at"] else f"node {site['node_id']}"
        print(f"{site['name']}\t{state}")
    return 0


def cmd_sites_anchors(args: argparse.Namespace) -> int:
    rows = _home(args).require().store().anchors(args.name)
    lines = [
        json.dumps({"site": args.name, "seq": r["seq"], "head": r["head"], "received_at": r["received_at"]})
        for r in rows
    ]
    args.out.write_text("".join(line + "\n" for line in lines))
    print(f"{len(rows)} audit anchors of site {args.name} written to {args.out}")
    return 0


def cmd_launch(args: argparse.Namespace) -> int:
    from hub.roster import check_roster, require_delivery

    home = _home(args).require()
    check_roster(home, args.protocol, warn=lambda msg: print(f"hub: warning: {msg}", file=sys.stderr))
    if not args.follow:
        from hub.studies import submit_study
        from hub.study_runner import runner_active

        launch_id = submit_study(home, args.protocol)
        study_id = home.store().launch(launch_id)["study_id"]
        print(f"study {study_id}: launch {launch_id} registered")
        if not runner_active(home):
            print(f"no `hub serve` runs the studies of {home.root} now: the launch starts when it does")
        print(f"follow it with: hub study show {study_id} --home {home.root}")
        return 0
    from hub.launcher import launch

    launch_id = launch(home, args.protocol)
    store = home.store()
    for job in store.jobs(launch_id):
        print(f"round {job['round']} {job['kind']} {job['center']}: {job['state']} {job['detail'] or ''}".rstrip())
    study_id = store.launch(launch_id)["study_id"]
    # `hub report` takes the protocol's study.id, not this launch id: print both, and the exact command.
    print(f"study {study_id}: launch {launch_id} finished")
    require_delivery(home, launch_id)
    print(f"write the report with: hub report --study {study_id} --out REPORT_DIR --home {home.root}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from hub.report import report

    paths = report(
        _home(args).require(),
        args.study,
        args.out,
        round_=args.round,
        blind=args.blind,
        formats=tuple(f.strip() for f in args.formats.split(",") if f.strip()),
        hartung_knapp=args.hartung_knapp,
    )
    for path in paths:
        print(path)
    return 0


def cmd_adapters_export(args: argparse.Namespace) -> int:
    from hub.report import adapter_for, export_adapter

    home = _home(args).require()
    row = adapter_for(home, args.study, args.round)
    out = export_adapter(row, args.out)
    print(f"round {args.round} adapter (sha256 {row['sha256']}) written to {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if args.faults:
        from hub.demo.faults import run_faults

        if args.mode != "evaluate" or args.insecure:
            raise UsageError("--faults runs the evaluation demo with TLS: drop --mode and --insecure")
        run_faults(args.out)
        return 0
    from hub.demo.study import run_demo

    report_dir = run_demo(args.out, mode=args.mode, insecure=args.insecure, keep_serving=args.keep_serving)
    print(f"demo report: {report_dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hub", description="Surg-R1 federated validation hub (coordinating center).")
    common = argparse.ArgumentParser(add_help=False)
    env_home = os.environ.get(HOME_ENV)
    common.add_argument(
        "--home",
        type=Path,
        default=Path(env_home) if env_home else None,
        help=f"hub home folder (default: ${HOME_ENV})",
    )
    common.add_argument("--db", metavar="URL", help="results store URL (default: [store] url in hub.toml)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", parents=[common], help="create the hub home, study CA and server certificate")
    p.add_argument("--study", default="surgfed", help="name written into the study CA certificate")
    p.add_argument("--host", default="127.0.0.1", help="public host name or IP the sites dial (in the certificate)")
    p.add_argument(
        "--bind",
        default="127.0.0.1",
        help="local address the Fleet proxy listens on (0.0.0.0 or the hub's interface address in production; "
        "behind NAT, --host names the public address and --bind the local one)",
    )
    p.add_argument("--port", type=int, default=9092, help="public Fleet-only TLS port the sites dial")
    p.add_argument("--internal-port", type=int, default=9093, help="SuperLink port on 127.0.0.1 (never public)")
    p.add_argument(
        "--san", action="append", help="extra host name or IP in the server certificate, besides --host (repeatable)"
    )
    p.set_defaults(func=cmd_init)

    p = sub.add_parser(
        "serve", parents=[common], help="run the SuperLink, the Fleet-only proxy, the open studies and the dashboard"
    )
    p.add_argument("--insecure", action="store_true", help="no TLS, no node authentication (tests only)")
    p.add_argument("--web-port", type=int, help="dashboard port on [web] host (default [web] port in hub.toml)")
    p.set_defaults(func=cmd_serve)

    sites = sub.add_parser("sites", help="register and revoke site node keys").add_subparsers(
        dest="scmd", required=True
    )
    p = sites.add_parser("add", parents=[common], help="register a site's node public key")
    p.add_argument("name", help="the site's name: every result of this node carries it")
    p.add_argument(
        "pubkey",
        type=Path,
        metavar="PUBKEY_FILE",
        help="FILE holding the site's node public key (OpenSSH ECDSA P-384, the secrets/node.key.pub that "
        "`site_node init` printed); a file path, not the key text",
    )
    p.set_defaults(func=cmd_sites_add)
    p = sites.add_parser("remove", parents=[common], help="revoke a site")
    p.add_argument("name", help="the site name given to `hub sites add`")
    p.set_defaults(func=cmd_sites_remove)
    sites.add_parser("list", parents=[common], help="list sites").set_defaults(func=cmd_sites_list)
    p = sites.add_parser("anchors", parents=[common], help="export a site's audit anchors for `site_node audit verify`")
    p.add_argument("name", help="the site's registered name (as in `hub sites list`)")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write the anchors to")
    p.set_defaults(func=cmd_sites_anchors)

    p = sub.add_parser("launch", parents=[common], help="register a study for `hub serve` to run across its sites")
    p.add_argument("--protocol", type=Path, required=True, help="study protocol YAML (its sites: and model hash set)")
    p.add_argument(
        "--follow",
        action="store_true",
        help="print each site's state until the study ends (runs it from here when no `hub serve` runs studies)",
    )
    p.set_defaults(func=cmd_launch)

    p = sub.add_parser("report", parents=[common], help="write the per-center tables and plots of a study")
    p.add_argument("--study", required=True, help="the protocol's study.id (printed by `hub launch`)")
    p.add_argument("--out", type=Path, required=True, help="report folder to write")
    p.add_argument("--round", type=int, help="report this round (default: the last round with results)")
    p.add_argument("--blind", action="store_true", help="replace institution names by Center A, B, ...")
    p.add_argument(
        "--hartung-knapp",
        action="store_true",
        help="pooled CIs by Hartung-Knapp-Sidik-Jonkman with the max(1, q) safeguard (default: DerSimonian-Laird, "
        "normal CI)",
    )
    p.add_argument(
        "--formats", default="csv,md,tex,html", help="comma-separated output formats, any of csv, md, tex, html"
    )
    p.set_defaults(func=cmd_report)

    adapters = sub.add_parser("adapters", help="global LoRA adapters of fine-tuning studies").add_subparsers(
        dest="acmd", required=True
    )
    p = adapters.add_parser("export", parents=[common], help="write a round's global adapter as a PEFT directory")
    p.add_argument("--study", required=True, help="the protocol's study.id")
    p.add_argument("--round", type=int, required=True, help="fine-tuning round whose global adapter to write")
    p.add_argument("--out", type=Path, required=True, help="folder for the PEFT adapter (replaced if it exists)")
    p.set_defaults(func=cmd_adapters_export)

    p = sub.add_parser("demo", help="the whole study on loopback: tiny model, three synthetic centers, report")
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="run folder (the report goes to OUT/report)")
    p.add_argument(
        "--mode",
        choices=["evaluate", "finetune", "grpo"],
        default="evaluate",
        help="evaluation study, federated LoRA fine-tuning (SFT) or federated GRPO",
    )
    p.add_argument("--insecure", action="store_true", help="run without TLS and node authentication")
    p.add_argument(
        "--faults",
        action="store_true",
        help="run the study clean, then again killing a site engine and `hub serve` mid-study; compare the tables",
    )
    p.add_argument(
        "--keep-serving",
        action="store_true",
        help="after the report, keep the federation running and print a site console login link (Ctrl-C stops)",
    )
    p.set_defaults(func=cmd_demo)

    from hub import commands_status, commands_studies, commands_web

    for module in (commands_web, commands_studies, commands_status):
        module.add_commands(sub, common, lambda fn: lambda args: fn(args, _home(args).require()))
    from hub.commands_keys import add_commands as add_key_commands

    add_key_commands(sub, sites, common, lambda fn: lambda args: fn(args, _home(args).require()))
    return use_defaults_formatter(parser)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SurgFedError as exc:
        print(f"hub: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("hub: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
