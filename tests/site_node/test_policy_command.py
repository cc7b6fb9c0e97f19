"""`site_node policy show`: the policy in force, and a one-line refusal when the privacy ledger was tampered with."""

from __future__ import annotations

from pathlib import Path

import pytest

from site_node.audit import AuditLog
from site_node.cli import main
from site_node.finetune_jobs import LEDGER_FILE
from site_node.home import init_home
from site_node.training.ledger import SiteLedger


def test_policy_show_prints_the_policy_and_verifies_the_ledger(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    home = init_home(tmp_path / "site", "a")
    ledger = SiteLedger(home.root / LEDGER_FILE, AuditLog(home.audit_log))
    with ledger.locked():
        ledger.append("s", 1, ["case-1", "case-2"], (1.0, 0.5, 10), 1e-5)
    assert main(["policy", "show", "--home", str(home.root)]) == 0
    out = capsys.readouterr().out
    assert "require_dp = true" in out and "min_train_videos = 10" in out and "1 rounds over 2 videos" in out
    ledger.path.unlink()  # deleting the ledger must not reset the budget
    assert main(["policy", "show", "--home", str(home.root)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "deleted, truncated or replaced" in err[0]
