"""`site_node apps ...`: which ClientApp bundles (Flower FABs) the site runs, pinned by sha256."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from protocols.errors import UsageError
from site_node.home import SiteHome


def _home(args: argparse.Namespace) -> SiteHome:
    if args.home is None:
        raise UsageError("no site home: pass --home DIR or set SURGFED_SITE_HOME")
    return SiteHome(args.home).require()


def _read(path: Path) -> bytes:
    from site_node.app_bundles import MAX_BUNDLE_BYTES

    try:
        if path.stat().st_size > MAX_BUNDLE_BYTES:
            raise UsageError(f"{path}: larger than the {MAX_BUNDLE_BYTES} bytes a bundle may have")
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read bundle {path}: {exc.strerror}") from None


def approve_shipped(home: SiteHome) -> str:
    """Approve the bundle of the installed surgfed release (what `site_node init` does); returns its sha256."""
    from site_node.app_bundles import approve, shipped_bundle

    return approve(home, shipped_bundle(), "shipped with the installed surgfed release").sha256


def cmd_approve(args: argparse.Namespace) -> int:
    from site_node.app_bundles import approve, read_bundle, shipped_bundle

    home = _home(args)
    if (args.fab is None) == (not args.shipped):
        raise UsageError("give a bundle file (.fab) or --shipped, not both")
    data, source = (
        (shipped_bundle(), "shipped with the installed surgfed release")
        if args.shipped
        else (
            _read(args.fab),
            str(args.fab),
        )
    )
    bundle = read_bundle(data, source)
    print(f"bundle {bundle.fab_id} {bundle.version} ({source})")
    for name, content in sorted(bundle.files.items()):
        print(f"  {len(content):>9} bytes  {name}")
    approve(home, data, source)
    print(f"approved: sha256 {bundle.sha256}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from site_node.app_bundles import approved_apps, shipped_bundle

    home = _home(args)
    apps = approved_apps(home)
    for app in apps:
        print(f"{app.sha256}\t{app.fab_id} {app.version}\tapproved {time.ctime(app.approved)}\t{app.source}")
    if not apps:
        print("no approved ClientApp bundles: the site answers no hub message")
    if args.shipped:
        import hashlib

        digest = hashlib.sha256(shipped_bundle()).hexdigest()
        state = "approved" if any(a.sha256 == digest for a in apps) else "NOT approved"
        print(f"this release's own bundle: sha256 {digest} ({state})")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from site_node.app_bundles import revoke

    app = revoke(_home(args), args.hash)
    print(f"revoked {app.fab_id} {app.version} sha256 {app.sha256}")
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    apps = sub.add_parser(
        "apps", help="ClientApp bundles this site runs (only approved ones, pinned by sha256)"
    ).add_subparsers(dest="apps_command", required=True)
    p = apps.add_parser("approve", parents=[common], help="review and approve a bundle (.fab) by its sha256")
    p.add_argument("fab", type=Path, nargs="?", help="the bundle file from the study coordinator (`flwr build`)")
    p.add_argument("--shipped", action="store_true", help="the bundle of the installed surgfed release instead")
    p.set_defaults(func=cmd_approve)
    p = apps.add_parser("list", parents=[common], help="approved bundles")
    p.add_argument("--shipped", action="store_true", help="also say whether this release's own bundle is approved")
    p.set_defaults(func=cmd_list)
    p = apps.add_parser("revoke", parents=[common], help="forget an approval and uninstall the bundle")
    p.add_argument("hash", help="the bundle's sha256 (at least its first 8 hex digits)")
    p.set_defaults(func=cmd_revoke)
