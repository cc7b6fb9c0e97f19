"""Fine-tuning at a site: checks before a train job is accepted, the training run, evaluation with an adapter."""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from protocols.adapters import decode_state, encode_state
from protocols.arrays import from_wire, to_wire
from protocols.contract import WireRecords
from protocols.errors import ContractError, ProtocolError
from protocols.finetune import FinetunePlan
from protocols.grpo import FinetuneMethod
from protocols.study import StudyProtocol
from site_node.home import SiteConfig, SiteHome
from site_node.model.loading import LoadedModel
from site_node.release_gate import grpo_record, train_payload
from site_node.store import DataStore
from site_node.training.grpo_round import grpo_round
from site_node.training.guard import PrivacyContext
from site_node.training.ledger import AuditSink, SiteLedger
from site_node.training.lora import TrainResult, applied_adapter, precheck_round, train_round

ADAPTER_IN = "adapter-in.json"
LEDGER_FILE = "privacy-ledger.jsonl"  # site-wide, every study; its hashes are mirrored in the audit log


def save_incoming_adapter(work_dir: Path, records: WireRecords) -> None:
    """Keep the hub's global adapter with the job (jobs run later, on the worker)."""
    if "adapter" not in records:
        return
    if "adapter-meta" not in records:
        raise ContractError("an adapter arrived without its adapter-meta record")
    data = {"arrays": records["adapter"]["values"], "meta": records["adapter-meta"]["values"]}
    (work_dir / ADAPTER_IN).write_text(json.dumps(data))


def load_incoming_adapter(work_dir: Path) -> tuple[dict[str, Any], dict[str, str]] | None:
    path = work_dir / ADAPTER_IN
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return {k: from_wire(v) for k, v in data["arrays"].items()}, dict(data["meta"])


def privacy_context(
    home: SiteHome, cfg: SiteConfig, protocol: StudyProtocol, round_: int, audit: AuditSink
) -> PrivacyContext:
    """Every training job answers to the site policy and the site-wide ledger, whatever the protocol says.
    `audit` must be the engine's own audit log (one writer per file)."""
    return PrivacyContext(
        SiteLedger(home.root / LEDGER_FILE, audit),
        protocol.study_id,
        total_rounds=protocol.round_plan.rounds,
        round=round_,
        budget_epsilon=cfg.epsilon_budget,
        policy=cfg.policy,
    )


def fedavg_weight(plan: FinetunePlan, result: TrainResult) -> int:
    """The `num-examples` that leaves. Under DP a public number, the same at every trainer (so FedAvg takes
    an equal-weight mean): the exact count would move by one video's frames when a video is added. Without
    DP the count rounded down to a power of two."""
    if plan.dp is not None:
        local_steps, _, per_step = plan.step_plan()
        return per_step * (local_steps or 1)
    return 1 << max(0, int(result.num_examples).bit_length() - 1)


def check_train(protocol: StudyProtocol, site: str, store: DataStore, privacy: PrivacyContext) -> None:
    """Refuse before anything runs: not a fine-tuning study, not a trainer, or a DP budget it would pass."""
    if protocol.finetune is None:
        raise ProtocolError(f"study {protocol.study_id} is not a fine-tuning study; this site trains for none other")
    if site not in protocol.finetune.trainers:
        raise ProtocolError(
            f"site {site} is not a trainer of study {protocol.study_id} (trainers: {list(protocol.finetune.trainers)})"
        )
    precheck_round(store, protocol.finetune, privacy)


def run_train(
    lm: LoadedModel,
    store: DataStore,
    protocol: StudyProtocol,
    job_id: str,
    work_dir: Path,
    privacy: PrivacyContext,
    progress: Callable[[str, int, int], None],
) -> WireRecords:
    plan = protocol.finetune
    assert plan is not None
    incoming = load_incoming_adapter(work_dir)
    global_state = decode_state(*incoming) if incoming else None
    # Batch order, dropout and augmentation from the site's own entropy, never from values the hub chose
    # (a known seed would let the hub replay which frames trained); DP sampling and noise draw their own.
    seed = secrets.randbits(63)
    extra = None
    if plan.method is FinetuneMethod.GRPO:
        result = grpo_round(lm, store, plan, global_state, seed=seed, progress=progress, privacy=privacy)
        stats = result.grpo_stats or {}
        floor = max(privacy.policy.min_videos, protocol.privacy.min_videos)
        extra = grpo_record(stats, int(stats.get("videos", 0)), floor)
    else:
        result = train_round(lm, store, plan, global_state, seed=seed, progress=progress, privacy=privacy)
    arrays, meta = encode_state(result.state, plan.wire_dtype)
    weight = fedavg_weight(plan, result)
    wire = {k: to_wire(v) for k, v in arrays.items()}
    return train_payload(job_id, protocol, wire, meta, weight, result.epsilon, extra)


@contextlib.contextmanager
def model_for_job(lm: LoadedModel, protocol: StudyProtocol, work_dir: Path) -> Iterator[LoadedModel]:
    """The engine's model, with the round's global adapter applied when the hub sent one."""
    incoming = load_incoming_adapter(work_dir)
    if incoming is None:
        yield lm
        return
    if protocol.finetune is None:
        raise ProtocolError(f"an adapter arrived for study {protocol.study_id}, which is not a fine-tuning study")
    with applied_adapter(lm, protocol.finetune.lora, decode_state(*incoming)) as adapted:
        yield adapted
