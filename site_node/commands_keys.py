"""`site_node keys rotate|activate`: a new node key, sent to the coordinator, swapped in once they confirm it."""

from __future__ import annotations

import argparse

from site_node.home import SiteHome


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    keys = sub.add_parser("keys", help="the site's node key (its identity at the hub)").add_subparsers(
        dest="kcmd", required=True
    )
    p = keys.add_parser("rotate", parents=[common], help="make a new node key and print what to send the coordinator")
    p.add_argument(
        "--restart", action="store_true", help="discard a pending new key and make another (default: print it again)"
    )
    p.set_defaults(func=cmd_keys_rotate)
    p = keys.add_parser("activate", parents=[common], help="use the new key once the coordinator has registered it")
    p.add_argument(
        "--fingerprint",
        required=True,
        metavar="SHA256:...",
        help="the fingerprint `hub sites rotate` printed at the hub, as the coordinator read it to you",
    )
    p.set_defaults(func=cmd_keys_activate)


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from site_node.keys import start_rotation

    home = SiteHome(args.home)
    r = start_rotation(home, restart=args.restart)
    made = "made" if r.made_now else "already pending (printed again; --restart makes another)"
    print(
        f"new node key {made} for site {r.site}.\n"
        f"This site keeps using its current key ({r.current_fingerprint}) until you activate the new one.\n\n"
        "Send the study coordinator this PUBLIC key (not secret; e-mail is fine), as the file\n"
        f"  {r.pub_file}\n"
        "whose content is\n"
        f"  {r.public_key}\n"
        f"fingerprint {r.fingerprint}\n\n"
        "The coordinator runs\n"
        f"  hub sites rotate {r.site} node.key.next.pub\n"
        "and reads you the fingerprint it prints; it must be the one above. Then run here\n"
        f"  site_node keys activate --home {home.root} --fingerprint {r.fingerprint}\n"
        "and restart `site_node serve` (systemctl restart surgfed-site). Agree on a time with the coordinator: from\n"
        "their `hub sites rotate` until your restart the hub refuses the old key and `site_node serve` stops;\n"
        "jobs then resume where they were (video by video)."
    )
    return 0


def cmd_keys_activate(args: argparse.Namespace) -> int:
    from site_node.keys import activate

    home = SiteHome(args.home)
    old, new = activate(home, args.fingerprint)
    print(
        f"node key {new} is now this site's key; the old key ({old}) was deleted.\n"
        "Restart `site_node serve` (systemctl restart surgfed-site) so the SuperNode dials with it."
    )
    return 0
