"""The `site_node deid` command: argument parsing, key and input checks, exit codes (0 ok, 3 quarantined, 2 usage)."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from protocols.errors import ConfigError, SurgFedError, UsageError
from site_node.audit import AuditLog
from site_node.audit_events import deid_run
from site_node.deid.batch import REPORT_NAME, DeidReport
from site_node.deid.keys import load_key
from site_node.deid.runner import deidentify_paths
from site_node.home import SiteHome

EXIT_OK, EXIT_USAGE, EXIT_QUARANTINED = 0, 2, 3
AUDIT_NAME = "deid-audit.jsonl"  # without a site home, each run is recorded beside its outputs


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `deid INPUT... --out OUT_DIR [--key-file KEY] [--profile NAME]`."""
    p = subparsers.add_parser(
        "deid",
        help="de-identify files and folders (DICOM, videos, JPEG/PNG frames, label text) into OUT_DIR",
        description="Every input file comes out de-identified under OUT_DIR with a pseudonymous name, or is "
        "quarantined (listed under OUT_DIR/quarantine/ with the reason; the original is never copied). "
        f"OUT_DIR/{REPORT_NAME} lists every input. Each run appends an entry (counts only) to the site's audit "
        f"log when a site home is known (--home or $SURGFED_SITE_HOME), else to OUT_DIR/{AUDIT_NAME}. "
        "Exit 0: all came out; 3: some were quarantined; 2: bad usage; 1: the run could not be audited.",
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="a file or a folder (walked recursively)")
    p.add_argument("--out", required=True, type=Path, metavar="OUT_DIR", help="where de-identified files are written")
    p.add_argument(
        "--key-file",
        type=Path,
        metavar="KEY",
        help="file with at least 32 bytes of secret (default: the site home's key)",
    )
    p.add_argument(
        "--profile",
        default="basic",
        metavar="NAME",
        help="built-in profile name or a site profile YAML path (default: basic)",
    )
    p.add_argument("--no-progress", action="store_true", help="do not show the progress bars")
    p.set_defaults(func=run)


def _key(args: argparse.Namespace) -> bytes:
    path = args.key_file
    if path is None:
        home = getattr(args, "home", None)
        if home is None:
            raise UsageError("no --key-file given and no site home (--home) to take the site key from")
        path = SiteHome(Path(home)).key_file
    try:
        return load_key(path)
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc


def audit_log_for(args: argparse.Namespace) -> Path:
    """The site's audit log when a site home is known (--home or $SURGFED_SITE_HOME), else OUT_DIR's own."""
    home = getattr(args, "home", None)
    if home is not None and SiteHome(home).config_file.is_file():
        return SiteHome(home).audit_log
    return Path(args.out) / AUDIT_NAME


def _audit(args: argparse.Namespace, report: DeidReport) -> Path:
    counts = Counter(f"{e.kind}.{e.status}" for e in report.entries)
    path = audit_log_for(args)
    deid_run(AuditLog(path), report.header, "key file" if args.key_file else "site key", counts)
    return path


def run(args: argparse.Namespace) -> int:
    """Steps: check inputs, load the key, de-identify, report; returns the exit code."""
    try:
        missing = [str(p) for p in args.inputs if not Path(p).exists()]
        if missing:
            raise UsageError(f"input {missing[0]} does not exist")
        key = _key(args)
        try:
            report = deidentify_paths(args.inputs, args.out, key, args.profile, progress=not args.no_progress)
        except ConfigError as exc:
            raise UsageError(f"profile {args.profile}: {exc}") from exc
    except SurgFedError as exc:
        print(f"site_node deid: error: {exc}", file=sys.stderr)
        return exc.exit_code
    n_bad = report.n_quarantined()
    try:
        log_path = _audit(args, report)
    except (OSError, SurgFedError) as exc:  # the outputs exist: say so, and that the run went unrecorded
        print(f"site_node deid: error: the run is done but could not be audited: {exc}", file=sys.stderr)
        return 1
    print(
        f"{len(report.entries) - n_bad} de-identified, {n_bad} quarantined; report: {Path(args.out) / REPORT_NAME}; "
        f"audit: {log_path}",
        file=sys.stderr,
    )
    return EXIT_QUARANTINED if n_bad else EXIT_OK
