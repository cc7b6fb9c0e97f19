"""`site_node protocols ...` and `jobs ...`: what the site answers, and on what terms."""

from __future__ import annotations

import argparse
import getpass
import time

from protocols.errors import UsageError
from site_node.home import SiteHome


def _home(args: argparse.Namespace) -> SiteHome:
    if args.home is None:
        raise UsageError("no site home: pass --home DIR or set SURGFED_SITE_HOME")
    return SiteHome(args.home).require()


def cmd_pending(args: argparse.Namespace) -> int:
    from site_node.approvals import list_pending

    rows = list_pending(_home(args).approved_dir)
    for digest, size, received in rows:
        print(f"{digest}\t{size} bytes\treceived {time.ctime(received)}")
    if not rows:
        print("no pending protocol requests")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from site_node.protocol_review import review

    _, lines, problems = review(_home(args), args.target)
    print("\n".join(lines))
    for problem in problems:
        print(f"PROBLEM      {problem}")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    from site_node.protocol_review import approve_new_snapshot, approve_reviewed, review

    home = _home(args)
    if args.snapshot:
        digest, diff = approve_new_snapshot(home, args.target)
        print(f"protocol {args.target[:16]}... may answer on store snapshot {digest[:16]}... ({diff} videos changed)")
        return 0
    if args.force and not (args.reason or "").strip():
        raise UsageError('--force needs --reason "..." (recorded in the audit log)')
    _, lines, _ = review(home, args.target)
    print("\n".join(lines))
    protocol = approve_reviewed(
        home, args.target, force_reason=args.reason if args.force else None, by=getpass.getuser()
    )
    print(f"approved {protocol.study_id} v{protocol.version}: {protocol.content_hash}")
    return 0


def cmd_reject(args: argparse.Namespace) -> int:
    from site_node.protocol_review import reject_pending

    reject_pending(_home(args), args.target, note=args.note or "", by=getpass.getuser())
    print(f"rejected protocol request {args.target[:16]}...; the hub's jobs for it stay refused")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from site_node.approvals import list_approved

    for digest, protocol in list_approved(_home(args).approved_dir):
        print(digest, protocol if isinstance(protocol, str) else f"{protocol.study_id} v{protocol.version}")
    return 0


def cmd_jobs_list(args: argparse.Namespace) -> int:
    from site_node.jobs import JobStore

    jobs = JobStore(_home(args).jobs_dir)
    for job in jobs.all():
        why = f" ({job.reason}: {job.detail})" if job.reason else ""
        print(f"{job.job_id}\t{job.kind.value} round {job.round} of {job.study}\t{job.state.value}{why}")
    print(f"job storage: {jobs.used_bytes()} of {jobs.quota_bytes} bytes")
    return 0


def cmd_jobs_prune(args: argparse.Namespace) -> int:
    from site_node.audit import AuditLog
    from site_node.jobs import JobStore

    home = _home(args)
    removed = JobStore(home.jobs_dir).prune(args.older_than_days * 86400.0)
    AuditLog(home.audit_log).append("jobs-pruned", count=len(removed))
    print(f"removed {len(removed)} finished job(s); answered questions stay answered")
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `protocols` and `jobs` to the site_node command line."""
    protocols = sub.add_parser("protocols", help="review and approve study protocols")
    psub = protocols.add_subparsers(dest="pcmd", required=True)
    p = psub.add_parser("approve", parents=[common], help="review, check and approve a protocol (FILE or pending HASH)")
    p.add_argument("target", help="protocol file, or the hash of a pending request")
    p.add_argument("--snapshot", action="store_true", help="let an approved study answer on the store as it is now")
    p.add_argument("--force", action="store_true", help="approve despite the problems found (needs --reason)")
    p.add_argument("--reason", help="why, recorded in the audit log")
    p.set_defaults(func=cmd_approve)
    p = psub.add_parser("reject", parents=[common], help="drop a pending protocol request (HASH) unapproved")
    p.add_argument("target", help="the hash of a pending request")
    p.add_argument("--note", help="why, recorded in the audit log")
    p.set_defaults(func=cmd_reject)
    p = psub.add_parser("show", parents=[common], help="what a protocol (FILE or pending HASH) asks of this site")
    p.add_argument("target", help="protocol file, or the hash of a pending request")
    p.set_defaults(func=cmd_show)
    psub.add_parser("pending", parents=[common], help="protocols the hub asked for, not approved").set_defaults(
        func=cmd_pending
    )
    psub.add_parser("list", parents=[common], help="list approved protocols").set_defaults(func=cmd_list)

    jobs = sub.add_parser("jobs", help="the site's jobs").add_subparsers(dest="jcmd", required=True)
    jobs.add_parser("list", parents=[common], help="every job, with local details").set_defaults(func=cmd_jobs_list)
    p = jobs.add_parser("prune", parents=[common], help="delete finished jobs and their files")
    p.add_argument("--older-than-days", type=float, default=30.0, help="keep jobs changed more recently (default 30)")
    p.set_defaults(func=cmd_jobs_prune)
