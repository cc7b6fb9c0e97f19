"""The site-wide privacy ledger: append-only, hash-chained JSON lines, mirrored in the audit log, locked."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from site_node.training.dp import PrivacyBudgetExceeded, rdp_epsilon

GENESIS = "0" * 64
MIRROR_EVENT = "privacy-ledger"  # the audit log's copy of every ledger entry's hash


class LedgerTampered(PrivacyBudgetExceeded):
    """The ledger is missing, edited or out of step with its audit mirror: no training until an operator looks."""


class AuditSink(Protocol):
    """The part of the audit log the ledger uses (site_node.audit.AuditLog)."""

    def append(self, event: str, **fields: Any) -> dict[str, Any]: ...

    def entries(self) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Round:
    """One recorded training round: which privacy units it touched and with which mechanism (None: no DP)."""

    seq: int
    study: str
    round: int | None
    units: frozenset[str]
    mechanism: tuple[float, float, int] | None  # (noise multiplier, sample rate, steps); None = not private

    @property
    def private(self) -> bool:
        return self.mechanism is not None


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class SiteLedger:
    """Every training round of this site, over all studies. Reading checks the hash chain and compares it
    with the audit mirror, so deleting, truncating or editing the file stops training instead of resetting
    the budget. `reserved()` holds an exclusive file lock: the budget check and the record are one step."""

    def __init__(self, path: Path, audit: AuditSink) -> None:
        self.path = Path(path)
        self.audit = audit
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _lines(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        try:
            return [json.loads(s) for s in self.path.read_text(encoding="utf-8").splitlines() if s.strip()]
        except (OSError, ValueError) as exc:
            raise LedgerTampered(
                f"privacy ledger {self.path} is unreadable ({type(exc).__name__}); training stops"
            ) from None

    def rounds(self) -> list[Round]:
        """The verified rounds; LedgerTampered when the chain breaks or disagrees with the audit mirror."""
        lines, prev = self._lines(), GENESIS
        for i, entry in enumerate(lines, start=1):
            body = {k: v for k, v in entry.items() if k != "hash"}
            if entry.get("seq") != i or entry.get("prev") != prev or entry.get("hash") != _digest(body):
                raise LedgerTampered(f"privacy ledger {self.path}: entry {i} was changed, removed or reordered")
            prev = entry["hash"]
        mirror = [e.get("ledger_hash") for e in self.audit.entries() if e.get("event") == MIRROR_EVENT]
        if mirror != [e["hash"] for e in lines]:
            raise LedgerTampered(
                f"privacy ledger {self.path} holds {len(lines)} rounds but the audit log mirrors {len(mirror)} "
                "(or different ones): the ledger was deleted, truncated or replaced; training stops"
            )
        return [_round(e) for e in lines]

    def append(self, study: str, round_: int | None, units: Sequence[str], mechanism: tuple[float, float, int] | None,
               delta: float | None) -> Round:  # fmt: skip
        """Append one round (call inside `locked()` after the checks) and mirror its hash in the audit log."""
        lines = self._lines()
        body: dict[str, Any] = {
            "seq": len(lines) + 1,
            "prev": lines[-1]["hash"] if lines else GENESIS,
            "study": study,
            "round": round_,
            "units": sorted(set(units)),
            "dp": None
            if mechanism is None
            else {
                "noise_multiplier": mechanism[0],
                "sample_rate": mechanism[1],
                "steps": mechanism[2],
                "delta": delta,
            },  # fmt: skip
            "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        entry = {**body, "hash": _digest(body)}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.audit.append(
            MIRROR_EVENT,
            ledger_seq=body["seq"],
            ledger_hash=entry["hash"],
            study=study[:128],
            private=mechanism is not None,
        )
        return _round(entry)


def _round(entry: dict[str, Any]) -> Round:
    dp = entry.get("dp")
    mech = None if dp is None else (float(dp["noise_multiplier"]), float(dp["sample_rate"]), int(dp["steps"]))
    return Round(int(entry["seq"]), str(entry["study"]), entry.get("round"), frozenset(entry["units"]), mech)


def study_epsilon(
    rounds: Sequence[Round], study: str, delta: float, extra: tuple[float, float, int] | None = None
) -> float:
    """Epsilon of one study at this site (every round of it assumed to touch every unit); inf after a non-DP round."""
    mine = [r for r in rounds if r.study == study]
    if any(not r.private for r in mine):
        return math.inf
    history = [r.mechanism for r in mine if r.mechanism is not None] + ([extra] if extra else [])
    return rdp_epsilon(history, delta)


def unit_epsilons(rounds: Sequence[Round], units: Sequence[str], delta: float,
                  extra: tuple[float, float, int] | None = None) -> dict[str, float]:  # fmt: skip
    """Site-wide epsilon per privacy unit over every study (plus `extra`, a round that would touch them all):
    each unit composes only the rounds that trained on it; a non-DP round makes it unbounded."""
    by_history: dict[tuple[int, ...], list[str]] = {}
    for unit in units:
        by_history.setdefault(tuple(r.seq for r in rounds if unit in r.units), []).append(unit)
    seq = {r.seq: r for r in rounds}
    out: dict[str, float] = {}
    for history, members in by_history.items():
        mechs = [seq[s].mechanism for s in history]
        if any(m is None for m in mechs):
            eps = math.inf
        else:
            eps = rdp_epsilon([m for m in mechs if m is not None] + ([extra] if extra else []), delta)
        out.update(dict.fromkeys(members, eps))
    return out
