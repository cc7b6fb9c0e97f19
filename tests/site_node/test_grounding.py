"""The grounding task on site: its definition is checked when loaded, and it re-reads stored answers on a real store."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from protocols.errors import ConfigError, DataError
from protocols.study import load_protocol
from protocols.tasks import load_task
from site_node.answer_format import hierarchical_target
from site_node.evaluation import _labelled_videos, evaluate_tasks
from site_node.grounding import GroundingRuntime, SourceAnswers, reuses_answers
from site_node.local_eval import open_data
from site_node.model.loading import load_model
from site_node.scoring import Record, VideoLabels
from site_node.task_runtime import Answer, runtime_for

TASK = load_task("grounding")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"sources": ["phase", "grounding"]}, "sources must list tasks"),
        ({"sources": []}, "sources must list tasks"),
        ({"sources": ["phaze"]}, "sources must list tasks"),
        ({"min_instrument_f1": 0}, "min_instrument_f1 must be a number in (0, 1]"),
        ({"min_instrument_f1": "half"}, "min_instrument_f1 must be a number in (0, 1]"),
        ({"phase_task": "phases"}, "phase_task must name a task"),
    ],
)
def test_a_bad_definition_fails_loudly(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        GroundingRuntime(dataclasses.replace(TASK, extra={**TASK.extra, **extra}))


def test_the_definition_lists_exactly_the_computed_metrics() -> None:
    with pytest.raises(ConfigError, match="metrics must be"):
        GroundingRuntime(dataclasses.replace(TASK, metrics=TASK.metrics[:-1], headline=TASK.metrics[0].name))
    assert reuses_answers(TASK) and not TASK.in_arena and load_task("phase").in_arena


def _answer(task: str, truth: Any, instruments: Callable[[str], list[str]]) -> str:
    final = {
        "triplet": lambda t: "; ".join(sorted(t)) or "none",
        "cvs": lambda t: "; ".join(f"C{i + 1}: {'yes' if x else 'no'}" for i, x in enumerate(t)),
    }.get(task, str)(truth)
    return hierarchical_target("Preparation", instruments(task), None, None).replace(
        "<answer>Preparation", f"<answer>{final}"
    )


def _sources(synthetic_site: Path, instruments: Callable[[str], list[str]]) -> tuple[Any, dict[str, SourceAnswers]]:
    """Answers for every labelled frame of four tasks, built from the labels; L1 names `instruments(task)`."""
    store = open_data(synthetic_site).store
    out = {}
    for name in ("phase", "action", "triplet", "cvs"):
        rt = runtime_for(name)
        videos, _ = _labelled_videos(rt, store)
        recs = [
            Record(v.entry.video_id, f, Answer(_answer(name, truth, instruments)), v.dataset, name)
            for v in videos
            for f, truth in sorted(v.labels.labels.items())
        ]
        out[name] = SourceAnswers(rt, recs, [VideoLabels(v.dataset, v.entry.video_id, v.labels) for v in videos])
    return store, out


def test_answers_are_joined_with_the_frames_labels_of_every_kind(synthetic_site: Path) -> None:
    store, sources = _sources(synthetic_site, lambda task: ["scissors"])  # L1 always says scissors
    est = GroundingRuntime(TASK).evaluate(store, sources, seed=1, replicates=100).estimates
    # instrument labels come from CholecT50 triplets and Cholec80 tool files; scissors is rarely present
    assert est["l1_instrument_precision"].n_videos == 4 and est["l1_hallucination_rate"].estimate > 0.8
    # every phase frame has a tool row at or before it (rows every 25 frames hold until the next, whatever the fps)
    labelled = len(sources["phase"].records) + len(sources["triplet"].records)
    labelled += sum(r.dataset == "cholect50" for r in sources["action"].records)
    assert est["grounded_accuracy"].n_frames == labelled
    assert est["l1_instrument_recall"].estimate < 0.2 and est["grounded_accuracy"].estimate < 0.2
    assert est["right_for_wrong_reasons"].estimate > 0.8  # the final answers are all right
    assert est["format_validity"].estimate == 0.0  # the answers have no L2
    # L3 says Preparation: consistent with the phase answers only where the phase is Preparation
    assert 0 < est["l3_answer_consistency"].estimate < 0.5
    assert est["l3_phase_accuracy"].estimate == pytest.approx(est["l3_answer_consistency"].estimate, abs=0.2)


def test_only_present_sources_count_and_none_is_an_error(synthetic_site: Path) -> None:
    store, sources = _sources(synthetic_site, lambda task: [])
    with pytest.raises(DataError, match="none of them ran here"):
        GroundingRuntime(TASK).evaluate(store, {"localization": sources["phase"]}, seed=1, replicates=100)
    only_cvs = GroundingRuntime(TASK).evaluate(store, {"cvs": sources["cvs"]}, seed=1, replicates=100).estimates
    assert only_cvs["grounded_accuracy"].n_videos == 0  # no instrument labels on the CVS frames
    assert only_cvs["l3_answer_consistency"].n_videos == 4


def test_a_study_run_reuses_the_generated_answers(tiny_model_dir: Path, synthetic_site: Path, tmp_path: Path) -> None:
    protocol_file = tmp_path / "study.yaml"
    protocol_file.write_text(
        "study: {id: g, version: '1', title: grounding}\nsites: [a]\n"
        "model: {name: tiny, manifest_sha256: '" + "0" * 64 + "'}\n"
        "tasks:\n  - {name: grounding}\n  - {name: phase, sample_every_s: 4.0, max_new_tokens: 48}\n"
        "round_plan: {mode: evaluate, rounds: 1}\nprivacy: {min_videos: 1, bootstrap_replicates: 100}\n",
        encoding="utf-8",
    )
    protocol = load_protocol(protocol_file)
    store = open_data(synthetic_site).store
    predictions = tmp_path / "predictions.jsonl"
    outcomes, failures = evaluate_tasks(
        load_model(tiny_model_dir, device="cpu"), store, protocol, batch_size=8, predictions=predictions
    )
    assert list(outcomes) == ["grounding", "phase"] and not failures  # the protocol's order, run after phase
    tasks = {json.loads(line)["task"] for line in predictions.read_text().splitlines()}
    assert tasks == {"phase"}  # grounding generated nothing
    est = outcomes["grounding"].estimates
    phase_frames = outcomes["phase"].estimates["accuracy"].n_frames
    assert est["format_validity"].n_frames == phase_frames and est["l3_answer_consistency"].n_frames == phase_frames
    assert 0.0 <= est["l1_instrument_f1"].estimate <= 1.0 and est["grounded_accuracy"].n_frames > 0
