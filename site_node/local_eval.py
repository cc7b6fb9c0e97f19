"""`site_node evaluate`: a site's dry run of a protocol on local data, without any hub; nothing leaves the site."""

from __future__ import annotations

import logging
import math
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocols.errors import UsageError
from protocols.model_ref import manifest_hash
from protocols.study import StudyProtocol, load_protocol
from protocols.tasks import load_task
from site_node.checkpoint import done_file
from site_node.datasets.registry import build_entries, detect
from site_node.evaluation import Model, Progress, TaskOutcome, evaluate_tasks
from site_node.model.loading import LoadedModel, load_model
from site_node.model.openai_backend import OpenAIModel
from site_node.scoring import write_metrics
from site_node.store import DatasetEntry, DataStore

log = logging.getLogger(__name__)


class MemoryStore(DataStore):
    """A data store listed in memory from dataset folders (paths relative to the data folder); no manifest written."""

    def __init__(self, root: Path, datasets: list[DatasetEntry]) -> None:
        super().__init__(root)
        self._datasets = datasets

    def datasets(self) -> list[DatasetEntry]:
        return list(self._datasets)


@dataclass(frozen=True)
class LocalData:
    store: DataStore
    sources: dict[str, tuple[str, Path]]  # dataset name -> (format, folder), for the reproduce commands


def open_data(data: Path) -> LocalData:
    """A site home or data store (manifest.json), else every dataset folder found under `data`."""
    data = Path(data).resolve()
    for root in (data, data / "store"):
        if (root / "manifest.json").is_file():
            store = DataStore(root)
            return LocalData(store, {d.dataset_id: (d.format, root / "data" / d.dataset_id) for d in store.datasets()})
    found = detect(data)
    if not found:
        raise UsageError(
            f"--data {data}: no dataset found (a folder in one of the formats, or subfolders named "
            "cholec80, cholect50, endoscapes, coco, csv)"
        )
    datasets, sources = [], {}
    for name, fmt, folder in found:
        videos, skipped = build_entries(folder, fmt, data)
        for video, reason in skipped.items():
            log.warning("%s: skipped %s: %s", name, video, reason)
        datasets.append(DatasetEntry(name, fmt, tuple(videos), skipped))
        sources[name] = (fmt, folder)
    return LocalData(MemoryStore(data, datasets), sources)


def load_for_eval(model: Path, adapter: Path | None, device: str) -> LoadedModel:
    """The model, with a LoRA adapter merged in when one is given."""
    lm = load_model(model, device=device)
    if adapter is not None:
        from peft import PeftModel

        if not (Path(adapter) / "adapter_config.json").is_file():
            raise UsageError(f"--adapter {adapter}: no adapter_config.json")
        lm.model = PeftModel.from_pretrained(lm.model, str(adapter)).merge_and_unload().eval()
    return lm


def arena_score(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The unweighted mean of the headline metrics of the tasks that ran, naming exactly which went in."""
    used = {
        t: r["metrics"][r["headline"]]["estimate"]
        for t, r in results.items()
        if r["metrics"].get(r["headline"], {}).get("estimate") is not None and load_task(t).in_arena
    }
    score = sum(used.values()) / len(used) if used else None
    return {
        "score": score,
        "tasks": [f"{t}:{results[t]['headline']}" for t in used],
        "missing": [t for t in results if t not in used and load_task(t).in_arena],
    }


def _score_command(
    task: str, sources: dict[str, tuple[str, Path]], datasets: list[str], out: Path, protocol: Path
) -> str:
    parts = ["site_node", "score", "--task", task, "--protocol", str(protocol)]
    for name in datasets:
        fmt, folder = sources[name]
        parts += ["--labels", str(folder), "--format", fmt, "--dataset", name]
    parts += ["--predictions", str(out / "predictions.jsonl"), "--out", str(out / f"rescored-{task}.json")]
    return shlex.join(parts)


def _run_tasks(
    lm: Model, data: LocalData, protocol: StudyProtocol, out: Path, batch_size: int, progress: Progress | None
) -> tuple[dict[str, TaskOutcome], dict[str, str]]:
    return evaluate_tasks(
        lm, data.store, protocol, batch_size=batch_size, predictions=out / "predictions.jsonl", progress=progress
    )


def run_local(
    protocol_file: Path,
    data_dir: Path,
    out: Path,
    *,
    model: Path,
    adapter: Path | None = None,
    device: str = "auto",
    batch_size: int = 8,
    progress: Progress | None = None,
    say: Callable[[str], None] = print,
    served: OpenAIModel | None = None,
) -> dict[str, Any]:
    """Evaluate every task of the protocol; write metrics, per-task METRICS files and the local predictions.

    With `served` (the site's [model] backend = "openai"), the site's model server answers; `model` is the
    directory of the weights it serves (hash-checked)."""
    if served is not None and adapter is not None:
        raise UsageError('--adapter needs the model loaded here: the site\'s [model] backend is "openai"')
    protocol = load_protocol(protocol_file)
    data = open_data(data_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "predictions.jsonl").unlink(missing_ok=True)
    done_file(out / "predictions.jsonl").unlink(missing_ok=True)  # a dry run starts afresh, never resumes
    model_hash = manifest_hash(model)
    if model_hash != protocol.model_sha256:
        say(
            f"warning: model manifest {model_hash[:16]}... is not the protocol's {protocol.model_sha256[:16]}... "
            "(a dry run continues; a study round would refuse it)"
        )
    lm: Model = served if served is not None else load_for_eval(model, adapter, device)
    outcomes, failures = _run_tasks(lm, data, protocol, out, batch_size, progress)
    results = {t: o.score.to_json() for t, o in outcomes.items() if o.score is not None}
    commands = []
    for task, result in results.items():
        write_metrics(out / f"metrics-{task}.json", result)
        if not load_task(task).in_arena:
            continue  # grounding re-reads the other tasks' answers: it has no predictions of its own to rescore
        used = sorted({d.dataset_id for d in data.store.datasets() if any(_serves(v, task) for v in d.videos)})
        commands.append(_score_command(task, data.sources, used, out, Path(protocol_file).resolve()))
    (out / "score-commands.sh").write_text("\n".join(["#!/bin/sh", "set -e", *commands]) + "\n", encoding="utf-8")
    summary = {
        "study": protocol.study_id,
        "protocol_hash": protocol.content_hash,
        "model": {
            "path": str(model),
            "manifest_sha256": model_hash,
            "matches_protocol": model_hash == protocol.model_sha256,
            "adapter": str(adapter) if adapter else None,
            "served_at": served.endpoint if served else None,
        },
        "tasks": results,
        "not_run": failures,
        "arena_score": arena_score(results),
    }
    write_metrics(out / "metrics.json", summary)
    return summary


def _serves(video: Any, task: str) -> bool:
    from site_node.task_runtime import runtime_for

    return runtime_for(task).label_kind.value in video.labels


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The per-task headline table and the Arena Score with the tasks it averaged."""
    lines = [f"{'task':<14}{'headline':<14}{'estimate':>9}  {'95% CI':<17}{'videos':>7}{'frames':>7}{'parse fail':>11}"]
    for task, r in summary["tasks"].items():
        m = r["metrics"][r["headline"]]
        ci = f"[{_fmt(m['ci_low'])}, {_fmt(m['ci_high'])}]"
        lines.append(
            f"{task:<14}{r['headline']:<14}{_fmt(m['estimate']):>9}  {ci:<17}{r['n_videos']:>7}{r['n_frames']:>7}"
            f"{_fmt(r['parse_fail_rate']):>11}"
        )
    for task, reason in summary["not_run"].items():
        lines.append(f"{task:<14}not run: {reason}")
    arena = summary["arena_score"]
    value = "n/a" if arena["score"] is None else f"{arena['score']:.3f}"
    lines.append(f"Arena Score {value} = mean of {', '.join(arena['tasks']) or 'no task'}")
    return lines
