"""Audit log: a hash chain that fails verification at the first changed, removed or reordered entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protocols.contract import Op
from site_node.audit import GENESIS, AuditError, AuditLog, _digest, verify
from site_node.cli import main as cli_main
from site_node.release_gate import ReleaseGate


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


# -- anchors: what the hub holds makes truncation, re-chaining and emptying visible ----------------------------
def _released(tmp_path: Path, n: int = 5) -> tuple[Path, list[dict]]:
    """n replies through the real release gate; the anchors are what each reply carried to the hub."""
    gate = ReleaseGate(AuditLog(tmp_path / "audit.jsonl"))
    hello = {"site": {"kind": "config", "values": {"software-version": "1"}}}
    anchors = [gate.release(Op.HELLO, hello, job_id=f"j{i}")["audit"]["values"] for i in range(n)]
    return gate.audit.path, anchors


def _rechain(lines: list[str]) -> list[str]:
    prev, out = GENESIS, []
    for seq, line in enumerate(lines, start=1):
        entry = json.loads(line)
        entry.update(seq=seq, prev=prev)
        entry["hash"] = _digest(entry)
        prev = entry["hash"]
        out.append(json.dumps(entry, sort_keys=True))
    return out


@pytest.mark.parametrize(
    ("attack", "first_bad"),
    [("truncate-to-3", 4), ("delete-middle-and-rechain", 3), ("empty", 1), ("delete-file", 1)],
)
def test_anchors_catch_what_the_chain_alone_cannot(tmp_path: Path, attack: str, first_bad: int, capsys) -> None:  # type: ignore[no-untyped-def]
    path, anchors = _released(tmp_path)
    anchor_file = tmp_path / "anchors.jsonl"
    anchor_file.write_text("".join(json.dumps({"site": "a", **a}) + "\n" for a in anchors))
    assert [a["seq"] for a in anchors] == [1, 2, 3, 4, 5]
    assert cli_main(["audit", "verify", "--log", str(path), "--anchors", str(anchor_file)]) == 0
    lines = path.read_text().splitlines()
    if attack == "truncate-to-3":
        path.write_text("\n".join(lines[:3]) + "\n")
    elif attack == "delete-middle-and-rechain":
        path.write_text("\n".join(_rechain(lines[:2] + lines[3:])) + "\n")
    elif attack == "empty":
        path.write_text("")
    else:
        path.unlink()
    if attack != "delete-file":
        assert verify(path) in (0, 3, 4)  # the chain alone still passes: this is the attack
    capsys.readouterr()
    assert cli_main(["audit", "verify", "--log", str(path), "--anchors", str(anchor_file)]) != 0
    err = capsys.readouterr().err
    assert f"anchor seq {first_bad} " in err, err


def test_head_is_kept_in_memory_and_follows_other_writers(tmp_path: Path) -> None:
    engine_log, cli_log = AuditLog(tmp_path / "a.jsonl"), AuditLog(tmp_path / "a.jsonl")
    engine_log.append("request", op="hello")
    cli_log.append("protocol-approved", protocol_hash="h" * 64)  # another process's append
    entry = engine_log.append("request", op="status")
    assert entry["seq"] == 3 and verify(engine_log.path) == 3
    # A log cut behind the engine's back is refused, not silently continued.
    engine_log.path.write_text(engine_log.path.read_text().splitlines()[0] + "\n")
    with pytest.raises(AuditError, match="shrank"):
        engine_log.append("request", op="fetch")


def test_every_value_is_capped(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl")
    huge = "x" * 35_000_000  # the alias-expanded protocol text of issue 12
    entry = log.append("refused-request", reason=huge, nested={"k": list(range(10_000))})
    assert len(entry["reason"]) < 600 and len(entry["nested"]["k"]) <= 65
    assert log.path.stat().st_size < 20_000
    for _ in range(3):
        log.append("request", op="hello")
    assert verify(log.path) == 4 and log.head.seq == 4
