"""`site_node` command line: each command's steps in order; known errors become one line and an exit code."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from protocols.cli_help import use_defaults_formatter
from protocols.errors import SurgFedError, UsageError
from site_node.home import HOME_ENV, SiteHome, owner_only

Handler = Callable[[argparse.Namespace], int]


def _home(args: argparse.Namespace) -> SiteHome:
    if args.home is None:
        raise UsageError(f"no site home: pass --home DIR or set {HOME_ENV}")
    return SiteHome(args.home)


def cmd_init(args: argparse.Namespace) -> int:
    from site_node.home import init_home

    home = init_home(
        args.home or Path(args.site),
        args.site,
        model_dir=args.model,
        superlink=args.superlink,
        root_certificates=args.ca,
        release=args.release,
    )
    print(f"site home created: {home.root}")
    if not args.no_shipped_app:
        from site_node.commands_apps import approve_shipped

        print(f"approved this release's ClientApp bundle: sha256 {approve_shipped(home)} (`site_node apps list`)")
    print(f"node public key (send it to the study coordinator for `hub sites add {args.site} FILE`): {home.node_pub}")
    print(home.node_pub.read_text().strip())
    return 0


def cmd_make_tiny(args: argparse.Namespace) -> int:
    from site_node.synthetic.tiny_model import build_tiny_model

    out = build_tiny_model(args.out_dir, seed=args.seed, warmup=not args.no_warmup)
    print(out)
    return 0


def cmd_model_hash(args: argparse.Namespace) -> int:
    from protocols.model_ref import manifest_hash

    print(manifest_hash(args.model_dir))
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from site_node.synthetic.formats import synthesize_all

    folders = synthesize_all(
        args.out, args.site, args.videos, args.shift, args.seed, seconds=args.seconds, progress=True
    )
    for fmt, folder in folders.items():
        print(f"{fmt}: {folder}  (site_node ingest --source {folder} --format {fmt})")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from site_node.ingest import ingest

    result = ingest(
        _home(args),
        args.source,
        args.format,
        out_of_body=args.out_of_body,
        profile=args.profile,
        max_blank_share=args.max_blank_share,
    )
    print(
        f"dataset {result.dataset.dataset_id}: {len(result.dataset.videos)} videos ingested, "
        f"{result.blank_share:.1%} of {result.frames} frames blanked as out-of-body ({result.detector})"
    )
    if warning := result.blank_warning():
        print(f"warning: {warning}", file=sys.stderr)
    for video_id, reason in result.skipped.items():
        print(f"  skipped {video_id}: {reason}", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from site_node.serve import serve

    return serve(_home(args), insecure=args.insecure, allow_weak_sandbox=args.allow_weak_sandbox)


def home_option() -> argparse.ArgumentParser:
    """`--home` on every command (default: the environment)."""
    common = argparse.ArgumentParser(add_help=False)
    default_home = os.environ.get(HOME_ENV)
    common.add_argument(
        "--home",
        type=Path,
        default=Path(default_home) if default_home else None,
        help=f"site home folder (default: ${HOME_ENV})",
    )
    return common


def cmd_releases_list(args: argparse.Namespace) -> int:
    from site_node.releases import pending

    jobs = pending(_home(args).require())
    for job in jobs:
        n = sum(1 for name in (job.payload or {}) if name.startswith("metric."))
        print(f"{job.job_id}\tstudy {job.study} round {job.round}\t{n} numbers\tfinished {time.ctime(job.updated)}")
    if not jobs:
        print("no results awaiting approval")
    return 0


def cmd_releases_show(args: argparse.Namespace) -> int:
    from site_node.release_table import render
    from site_node.releases import show

    home = _home(args).require()
    print(show(home, args.job_id) if args.json else render(home, args.job_id))
    return 0


def cmd_releases_decide(args: argparse.Namespace) -> int:
    from site_node.releases import decide

    job = decide(
        _home(args).require(),
        args.job_id,
        approve=args.approve,
        note=getattr(args, "note", "") or "",
        by=getpass.getuser(),
    )
    print(f"{job.job_id}: {job.state.value}")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from site_node.audit import load_anchors, verify, verify_anchored

    path = args.log or _home(args).audit_log
    if args.anchors is None:
        print(f"{path}: {verify(path)} entries, chain intact")
        return 0
    anchors = load_anchors(args.anchors)
    print(f"{path}: {verify_anchored(path, anchors)} entries, chain intact, all {len(anchors)} hub anchors match")
    return 0


def cmd_audit_show(args: argparse.Namespace) -> int:
    from site_node.audit import AuditLog

    for entry in AuditLog(args.log or _home(args).audit_log).entries():
        fields = {k: v for k, v in entry.items() if k not in ("seq", "time", "event", "prev", "hash") and v is not None}
        print(entry["seq"], entry["time"], entry["event"], json.dumps(fields, sort_keys=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from site_node.datasets.registry import FORMATS

    parser = argparse.ArgumentParser(prog="site_node", description="Surg-R1 site node (runs inside the hospital).")
    sub = parser.add_subparsers(dest="command", required=True)
    common = home_option()

    p = sub.add_parser("init", parents=[common], help="create a site home (config, secrets, node key, store)")
    p.add_argument("--site", required=True, help="this site's name as registered at the hub")
    p.add_argument("--model", type=Path, help="local model directory (site.toml [model] dir; can be set later)")
    p.add_argument("--superlink", default="127.0.0.1:9092", help="the hub's public Fleet address HOST:PORT")
    p.add_argument("--ca", type=Path, help="the study CA certificate file (the hub's pki/ca.crt, from the coordinator)")
    p.add_argument(
        "--release",
        choices=["auto", "manual"],
        default="auto",
        help="auto: results leave once the release gate passes them; manual: each waits for "
        "`site_node releases approve` (site.toml [site] release)",
    )
    p.add_argument(
        "--no-shipped-app",
        action="store_true",
        help="do not approve the ClientApp bundle of the installed surgfed release (approve bundles with "
        "`site_node apps approve` instead)",
    )
    p.set_defaults(func=cmd_init)

    model = sub.add_parser("model", help="model tools").add_subparsers(dest="model_command", required=True)
    p = model.add_parser("make-tiny", help="build the tiny Qwen2.5-VL used by tests and the demo")
    p.add_argument("out_dir", type=Path, help="folder to write the model into")
    p.add_argument("--seed", type=int, default=0, help="random seed of the weights and the tokenizer")
    p.add_argument("--no-warmup", action="store_true", help="skip the short warm-up training (random answers)")
    p.set_defaults(func=cmd_make_tiny)
    p = model.add_parser("hash", help="print the model directory's manifest hash (a protocol's model.manifest_sha256)")
    p.add_argument("model_dir", type=Path, help="the model directory a site loads")
    p.set_defaults(func=cmd_model_hash)

    p = sub.add_parser("synth", help="write synthetic videos and labels in every supported format")
    p.add_argument("--site", required=True, help="center name written into the synthetic data")
    p.add_argument("--out", type=Path, required=True, help="folder to write (one subfolder per format)")
    p.add_argument("--videos", type=int, default=6, help="number of videos")
    p.add_argument("--shift", type=float, default=0.0, help="camera colour shift in [0, 1]: how far from the model")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--seconds", type=float, default=24.0, help="length of each video in seconds")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("ingest", parents=[common], help="de-identify a dataset into the site's store")
    p.add_argument(
        "--source", type=Path, required=True, help="the dataset folder (videos and label files, as --format lays out)"
    )
    p.add_argument("--format", required=True, choices=FORMATS, help="the dataset's layout and label format")
    p.add_argument(
        "--out-of-body",
        default="colour",
        choices=["colour", "none"],
        help="out-of-body frame detector: the colour heuristic, or none for footage known to "
        "hold no room scenes (e.g. synthetic data)",
    )
    p.add_argument(
        "--profile",
        default="basic",
        metavar="NAME",
        help="de-identification profile: built-in name or the site profile YAML path (default: basic, which "
        "quarantines videos from devices that match no recorder rule)",
    )
    p.add_argument(
        "--max-blank-share",
        type=float,
        metavar="SHARE",
        help="fail when the detector blanks more than this share of the frames, in [0, 1] "
        "(default: site.toml [ingest] max_blank_share; unset: warn above 10%% only)",
    )
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("serve", parents=[common], help="run the site engine and the SuperNode")
    p.add_argument("--insecure", action="store_true", help="no TLS, no node authentication (tests only)")
    p.add_argument(
        "--allow-weak-sandbox",
        action="store_true",
        help="start even when the kernel grants no Landlock file rules (hub code could read the site home)",
    )
    p.set_defaults(func=cmd_serve)

    releases = sub.add_parser("releases", help="manual release queue").add_subparsers(dest="rcmd", required=True)
    releases.add_parser("list", parents=[common], help="results awaiting approval").set_defaults(func=cmd_releases_list)
    for name, help_text in (
        ("show", "print what would leave as a table (--json: the exact payload)"),
        ("approve", "release it"),
        ("reject", "never release it"),
    ):
        p = releases.add_parser(name, parents=[common], help=help_text)
        p.add_argument("job_id", help="a job id from `site_node releases list`")
        if name == "show":
            p.add_argument("--json", action="store_true", help="the exact records that would leave, as JSON")
        if name == "reject":
            p.add_argument(
                "--note", default="", help="reason recorded in the audit log (the hub sees only rejected-by-owner)"
            )
        p.set_defaults(func=cmd_releases_show if name == "show" else cmd_releases_decide, approve=name == "approve")

    audit = sub.add_parser("audit", help="the tamper-evident audit log").add_subparsers(dest="acmd", required=True)
    for name, func in (("verify", cmd_audit_verify), ("show", cmd_audit_show)):
        p = audit.add_parser(name, parents=[common], help=f"{name} the audit log")
        p.add_argument("--log", type=Path, help="audit log file (default: the site's own)")
        if name == "verify":
            p.add_argument("--anchors", type=Path, help="anchors exported by the hub (`hub sites anchors`)")
        p.set_defaults(func=func)

    _register_optional(sub, common)
    return use_defaults_formatter(parser)


def _register_optional(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Commands that live beside their modules register themselves (they add `--home` from `common`)."""
    from site_node.commands_apps import register as register_apps
    from site_node.commands_eval import register as register_eval
    from site_node.commands_keys import register as register_keys
    from site_node.commands_protocols import register as register_protocols
    from site_node.console.commands import register as register_console
    from site_node.deid.command import register as register_deid
    from site_node.doctor import register as register_doctor
    from site_node.policy_command import register as register_policy

    register_eval(sub, common)
    register_protocols(sub, common)
    register_policy(sub, common)
    register_apps(sub, common)
    register_keys(sub, common)
    register_doctor(sub, common)
    register_console(sub, common)

    register_deid(sub)
    deid = sub.choices["deid"]
    if not any("--home" in a.option_strings for a in deid._actions):
        deid.add_argument(
            "--home",
            type=Path,
            default=common.get_default("home"),
            help=f"site home folder, for its key when --key-file is not given (default: ${HOME_ENV})",
        )


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with owner_only():  # what any site command writes (site home, de-identified copies, logs) is owner-only
            return int(args.func(args))
    except SurgFedError as exc:
        print(f"site_node: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("site_node: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
