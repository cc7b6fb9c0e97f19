"""Runs every round of a launch through the coordinator: evaluation steps, and training ones in a fine-tuning study."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hub.coordinator import Launch, LaunchStopped, NodeDirectory, Step, StepRunner, Transport
from hub.store_rounds import StudyRounds
from protocols.contract import JobKind, WireRecords
from protocols.states import LaunchState
from protocols.study import loads_protocol


def run_launch(
    transport: Transport,
    store: Any,
    launch_id: str,
    *,
    adapters_dir: Path | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> None:
    """Run every round of a launch; a failing site is recorded against that site and the study goes on."""
    row = store.launch(launch_id)
    if not LaunchState(row["state"]).open:
        return  # cancelled before this run started
    if row["state"] == LaunchState.PENDING.value:  # queued (or reopened by a rerun) and not claimed yet
        StudyRounds(store).set_running(launch_id, row.get("run_id"))
    study = store.study(row["study_id"])
    protocol = loads_protocol(study["protocol_yaml"], f"study {study['study_id']}")
    if protocol.content_hash != row["protocol_hash"]:
        store.finish_launch(
            launch_id, LaunchState.FAILED, "the hub's package version changed since launch; launch again"
        )
        return
    launch = Launch(
        transport,
        store,
        protocol,
        launch_id,
        study["protocol_yaml"],
        NodeDirectory(transport, store.site_nodes(), store.site_nodes),
        protocol.round_plan.deadline_minutes * 60,
        sleep,
        clock,
    )
    adapter: WireRecords = {}
    try:
        for round_ in protocol.round_numbers:
            if round_ >= 1 and protocol.finetune is not None:
                from hub.federated import train_step  # torch and peft only when a study fine-tunes

                adapter = train_step(launch, round_, adapter, adapters_dir or Path("adapters"))
            StepRunner(launch, Step(JobKind.EVALUATE, round_, protocol.sites, adapter)).run()
    except LaunchStopped:
        return  # cancelled: the store already says so
    except Exception as exc:
        store.finish_launch(launch_id, LaunchState.FAILED, f"{type(exc).__name__}: {exc}")
        raise
    store.finish_launch(launch_id, LaunchState.FINISHED)
