"""A fine-tuning round at the hub: trainers' adapters averaged as they arrive, stored as a PEFT directory."""

from __future__ import annotations

from pathlib import Path

from hub.adapter_guard import AdapterGuard
from hub.aggregation import StreamingFedAvg, write_peft_adapter
from hub.coordinator import Launch, Step, StepRunner
from protocols.adapters import WireDtype, decode_state, encode_state
from protocols.arrays import from_wire, to_wire
from protocols.contract import JobKind, WireRecords
from protocols.errors import SurgFedError
from protocols.records import adapter_records


def train_step(launch: Launch, round_: int, adapter: WireRecords, adapters_dir: Path) -> WireRecords:
    """Train at every trainer from `adapter` (none in round 1), FedAvg the replies, store and return the result."""
    plan = launch.protocol.finetune
    assert plan is not None
    done = {row["round"]: row for row in launch.store.adapters(launch.launch_id)}
    if round_ in done:  # a restarted hub resumes after this round's aggregation: send the same adapter again
        return _stored_adapter(Path(done[round_]["path"]), plan.wire_dtype)
    # Every reply is checked against the round's global adapter and the protocol's LoRA settings; a refused
    # one raises ContractError, which the coordinator records against that site while the round goes on.
    reference = None
    if adapter:
        reference = decode_state(
            {k: from_wire(v) for k, v in adapter["adapter"]["values"].items()}, adapter["adapter-meta"]["values"]
        )
    guard = AdapterGuard(plan.lora, reference, plan.max_update_norm)
    fedavg = StreamingFedAvg(guard=guard, max_share=plan.max_site_share)

    def on_train(site: str, records: WireRecords) -> None:
        arrays = {k: from_wire(v) for k, v in records["adapter"]["values"].items()}
        fedavg.add(arrays, records["adapter-meta"]["values"], int(records["train"]["values"]["num-examples"]), site)

    try:
        runner = StepRunner(launch, Step(JobKind.TRAIN, round_, plan.trainers, adapter, on_train))
        runner.run()
        # Without a quorum in the protocol the round goes on with whichever trainers delivered (at least one).
        needed = min(launch.protocol.round_plan.min_sites or 1, len(plan.trainers))
        if fedavg.num_examples == 0 or len(fedavg.sites) < needed:
            raise SurgFedError(
                f"round {round_}: {len(fedavg.sites)} trainer(s) returned an adapter, the round needs "
                f"{max(needed, 1)} (round_plan.min_sites); see the site states"
            )
        state = fedavg.result(plan.wire_dtype)
    finally:
        fedavg.close()
    out = adapters_dir / launch.launch_id / f"round-{round_}"
    stored = write_peft_adapter(
        state, plan.lora, launch.protocol.model_name, out, num_examples=fedavg.num_examples, sites=tuple(fedavg.sites)
    )
    launch.store.add_adapter(
        launch.launch_id, round_, stored.sha256, str(stored.path), stored.num_examples, ",".join(stored.sites)
    )
    arrays, meta = encode_state(state, plan.wire_dtype)
    return adapter_records({k: to_wire(v) for k, v in arrays.items()}, meta)


def _stored_adapter(path: Path, wire_dtype: WireDtype) -> WireRecords:
    """A round's stored global adapter as the records sent with the next jobs (the same bytes as first sent)."""
    from safetensors.torch import load_file

    from protocols.adapters import ADAPTER_WEIGHTS

    arrays, meta = encode_state(load_file(str(path / ADAPTER_WEIGHTS)), wire_dtype)
    return adapter_records({k: to_wire(v) for k, v in arrays.items()}, meta)
