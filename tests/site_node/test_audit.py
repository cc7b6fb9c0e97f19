"""Audit log: a hash chain that fails verification at the first changed, removed or reordered entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from site_node.audit import AuditError, AuditLog, verify


def _log(tmp_path: Path, n: int = 5) -> Path:
    log = AuditLog(tmp_path / "audit.jsonl")
    for i in range(n):
        log.append("released", op="fetch", job_id=f"j{i}", digest="d" * 64)
    return log.path


def test_intact_log_verifies(tmp_path: Path) -> None:
    assert verify(_log(tmp_path)) == 5


def test_one_byte_edit_fails_at_that_entry(tmp_path: Path) -> None:
    path = _log(tmp_path)
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace('"j2"', '"j9"')
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AuditError, match=r":3: entry 3 was changed"):
        verify(path)


@pytest.mark.parametrize("mutation", ["remove", "swap", "truncate"])
def test_removed_reordered_truncated(tmp_path: Path, mutation: str) -> None:
    path = _log(tmp_path)
    lines = path.read_text().splitlines()
    if mutation == "remove":
        del lines[1]
    elif mutation == "swap":
        lines[1], lines[2] = lines[2], lines[1]
    else:
        lines[-1] = lines[-1][:20]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AuditError, match=r":\d+: "):
        verify(path)
