"""Events the audit log records beyond replies: ingest counts, job failures, copied approvals, policy changes."""

from __future__ import annotations

import json
from pathlib import Path

from site_node.audit import AuditLog, verify
from site_node.audit_events import on_start
from site_node.home import init_home
from site_node.ingest import ingest


def test_copied_approval_and_policy_change_are_recorded_at_start(tmp_path: Path) -> None:
    home = init_home(tmp_path / "site", "site-a")
    audit = AuditLog(home.audit_log)
    policy = home.config().policy.as_dict()
    assert on_start(audit, home.approved_dir, policy) == []  # first start: the policy in force is recorded
    assert on_start(audit, home.approved_dir, policy) == []  # nothing changed
    # The attack: an approval made by copying a file instead of `site_node protocols approve`.
    (home.approved_dir / f"{'ab' * 32}.yaml").write_text("study_id: x\n")
    notes = on_start(audit, home.approved_dir, {**policy, "min_videos": 1})
    assert len(notes) == 2 and "copied in" in notes[0] and "policy changed" in notes[1]
    events = [e["event"] for e in audit.entries()]
    assert events == ["policy", "approval-found", "policy-changed"]
    assert on_start(audit, home.approved_dir, {**policy, "min_videos": 1}) == []  # recorded once
    assert verify(audit.path) == 3


def test_ingest_is_recorded_with_counts_and_no_names(tmp_path: Path, synthetic_site: Path) -> None:
    home = init_home(tmp_path / "site", "site-a")
    result = ingest(home, synthetic_site / "cholec80", "cholec80", profile="demo")
    entry = AuditLog(home.audit_log).entries()[-1]
    assert entry["event"] == "ingest" and entry["videos"] == len(result.dataset.videos)
    assert entry["format"] == "cholec80" and sum(entry["files"].values()) >= entry["videos"]
    text = json.dumps(entry)
    assert str(synthetic_site) not in text and "video" not in text.replace('"videos"', "")
