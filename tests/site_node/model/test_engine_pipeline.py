"""The pipelined engine against today's unpipelined path, frame for frame, on the synthetic demo site."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from protocols.errors import DataError
from protocols.study import TaskPlan
from site_node.datasets.frames import iter_frames
from site_node.evaluation import _labelled_videos, evaluate_task, select_frames
from site_node.local_eval import open_data
from site_node.model.generate import chat_text, encode_batch, generate_answers
from site_node.model.loading import LoadedModel, load_model
from site_node.model.pipeline import EvalRequest, answer_frames, collate
from site_node.model.prefetch import FramePrefetcher, VideoJob, encode_frame, frames_inline
from site_node.model.scoring import candidate_logprobs, model_input_size
from site_node.store import DataStore
from site_node.task_runtime import runtime_for


@pytest.fixture(scope="module")
def lm(tiny_model_dir: Path) -> LoadedModel:
    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def store(synthetic_site: Path) -> DataStore:
    return open_data(synthetic_site).store


def test_collate_pads_as_the_processor_does(lm: LoadedModel) -> None:
    """Frames of different sizes (so different prompt lengths): the same tensors as one processor call on the batch."""
    text = chat_text(lm.processor, "Which phase?")
    images = [Image.new("RGB", (160, 90), (200, 40, 40)), Image.new("RGB", (60, 60), (10, 90, 200))]
    items = [encode_frame(lm.processor, text, im, 0, i) for i, im in enumerate(images)]
    got = collate(items, lm.processor.tokenizer.pad_token_id, lm.device, lm.dtype)
    want = encode_batch(lm, images, text)
    assert got["input_ids"].shape[1] > len(items[1].input_ids)  # padding happened
    for key, value in want.items():
        assert torch.equal(got[key], value), key


def _legacy(lm: LoadedModel, store: DataStore, plan: TaskPlan) -> dict[tuple[str, str, int], tuple]:
    """Today's path: per video, generate_answers, then candidate_logprobs (a second vision pass per frame)."""
    rt = runtime_for(plan.name)
    out = {}
    for v in _labelled_videos(rt, store)[0]:
        frames = select_frames(list(v.labels.labels), v.labels.fps or v.entry.fps, plan.sample_every_s)
        pairs = list(iter_frames(store.path(v.entry.video), v.labels, frames, v.entry.fps))
        images, prompt = [im for _, im in pairs], rt.task.render_prompt()
        texts = generate_answers(lm, images, prompt, max_new_tokens=plan.max_new_tokens, batch_size=8)
        cands = rt.candidates()
        scores = candidate_logprobs(lm, images, prompt, texts, cands) if cands else [None] * len(texts)
        for (f, im), text, s in zip(pairs, texts, scores, strict=True):
            out[(v.dataset, v.entry.video_id, f)] = (text, s, list(model_input_size(lm, im)))
    return out


def _read(path: Path) -> dict[tuple[str, str, int], tuple]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {(r["dataset"], r["video"], r["frame"]): (r["answer"], r.get("logprobs"), r["image_size"]) for r in rows}


@pytest.mark.parametrize(("task", "every_s"), [("phase", 2.0), ("cvs", 1.0)])
def test_engine_matches_the_unpipelined_path(
    lm: LoadedModel, store: DataStore, tmp_path: Path, task: str, every_s: float
) -> None:
    plan = TaskPlan(task, every_s, 24)
    legacy = _legacy(lm, store, plan)
    kw = {"batch_size": 8, "seed": 5, "replicates": 200}
    inline = evaluate_task(lm, store, plan, predictions=tmp_path / "a.jsonl", **kw)
    with FramePrefetcher(lm.path, workers=2, depth=3) as prefetcher:
        piped = evaluate_task(lm, store, plan, predictions=tmp_path / "b.jsonl", prefetcher=prefetcher, **kw)
    a, b = _read(tmp_path / "a.jsonl"), _read(tmp_path / "b.jsonl")
    assert a == b  # worker processes change nothing, bit for bit
    assert sorted(a) == sorted(legacy) and len(a) >= 4  # the same video in two datasets counts twice
    for key, (text, scores, size) in legacy.items():
        assert a[key][0] == text and a[key][2] == size, key
        if scores is not None:  # one vision pass, reused: the same scores to float tolerance
            assert a[key][1].keys() == scores.keys()
            assert all(math.isclose(a[key][1][c], s, rel_tol=1e-4, abs_tol=1e-4) for c, s in scores.items())
    assert inline.score is not None and piped.score is not None
    assert inline.score.to_json() == piped.score.to_json()
    for name, est in inline.estimates.items():
        assert est.n_frames == len(legacy) and (math.isnan(est.estimate) or 0 <= est.estimate <= 1), name


def _jobs(store: DataStore, every_s: float) -> list[VideoJob]:
    rt = runtime_for("phase")
    out = []
    for v in _labelled_videos(rt, store)[0]:
        frames = select_frames(list(v.labels.labels), v.labels.fps or v.entry.fps, every_s)
        out.append(VideoJob(store.path(v.entry.video), v.labels, tuple(frames), v.entry.fps))
    return out


def test_workers_deliver_the_inline_frames_in_order(lm: LoadedModel, store: DataStore) -> None:
    """Three videos (one twice) over two workers whose queues hold two frames: same frames, same order."""
    jobs = _jobs(store, 1.0)
    jobs = [*jobs, jobs[0]]
    text = chat_text(lm.processor, "Which phase?")
    want = list(frames_inline(lm.processor, text, jobs))
    with FramePrefetcher(lm.path, workers=2, depth=2) as prefetcher:
        got = list(prefetcher.frames(text, jobs))
        again = list(prefetcher.frames(text, jobs[:1]))  # the workers serve the next task too
    assert [(g.video, g.frame) for g in got] == [(w.video, w.frame) for w in want]
    assert all(np.array_equal(g.pixel_values, w.pixel_values) for g, w in zip(got, want, strict=True))
    assert [(g.video, g.frame) for g in again] == [(w.video, w.frame) for w in want if w.video == 0]


def test_a_worker_error_names_the_video(lm: LoadedModel, store: DataStore, tmp_path: Path) -> None:
    jobs = _jobs(store, 1.0)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    jobs[1] = VideoJob(broken, jobs[1].labels, jobs[1].frames, jobs[1].fps)
    with FramePrefetcher(lm.path, workers=2, depth=2) as prefetcher, pytest.raises(DataError, match="broken.mp4"):
        list(prefetcher.frames(chat_text(lm.processor, "Which phase?"), jobs))


def test_length_bucketing_cuts_padding_and_changes_no_answer(lm: LoadedModel) -> None:
    """Frames from cameras of three aspect ratios (three prompt lengths), interleaved as videos from several
    recorders arrive: bucketed batches answer every frame exactly as arrival-order batches, in arrival order."""
    text = chat_text(lm.processor, "Which phase?")
    sizes = [(160, 90), (60, 60), (90, 120)]
    items = [
        encode_frame(lm.processor, text, Image.new("RGB", sizes[i % 3], (40 * (i % 6), 90, 200 - 7 * i)), i % 5, i)
        for i in range(12)
    ]
    assert len({len(it.input_ids) for it in items}) == 3
    cands = {"a": "Preparation</answer>", "b": "ClippingCutting</answer>"}
    plain = EvalRequest("Which phase?", cands, 4, batch_size=4, bucket_window=0)
    bucketed = EvalRequest("Which phase?", cands, 4, batch_size=4, bucket_window=12)
    want = list(answer_frames(lm, items, plain))
    got = list(answer_frames(lm, items, bucketed))
    assert [(v, f) for v, f, _ in got] == [(it.video, it.frame) for it in items]  # arrival order
    assert [a.text for *_, a in got] == [a.text for *_, a in want]
    assert [a.size for *_, a in got] == [a.size for *_, a in want]
    for (*_, a), (*_, b) in zip(got, want, strict=True):
        assert a.logprobs is not None and b.logprobs is not None and a.logprobs.keys() == b.logprobs.keys()
        assert all(math.isclose(a.logprobs[c], b.logprobs[c], rel_tol=1e-5, abs_tol=1e-5) for c in cands)
    assert plain.timing.prompt_tokens == bucketed.timing.prompt_tokens
    assert plain.timing.padding_share > 0.05 and bucketed.timing.padding_share == 0.0
