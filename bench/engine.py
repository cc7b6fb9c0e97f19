"""Naive per-frame loop vs the site engine on the same frames and model, in one process: frames/s and ratios.

    PYTHONPATH=$PWD .venv/bin/python bench/engine.py                 # tiny at 32 and 256 tokens, mid-size at 32
    PYTHONPATH=$PWD .venv/bin/python bench/engine.py --videos 6 --tokens 32,256 --mid-tokens 32,256
    PYTHONPATH=$PWD .venv/bin/python bench/engine.py --tokens '' --mid-tokens ''     # the bucketing line only

The frames are the 1-fps frames of synthetic phase videos of one demo site (lakeside-university). Generation is
forced to a fixed length (min_new_tokens = max_new_tokens) so every path does the same decoding work. Paths:
  naive       for each frame: decode the video from its start up to the frame, processor, generate at batch 1
  engine-gen  the engine's generation path: frames decoded and preprocessed by worker processes through bounded
              queues, batched across videos, one vision pass per batch
  naive-task  the naive loop plus candidate scoring per frame (a second vision pass) and the task's bootstrap
  engine-task the engine's whole task: generation, candidate scoring on the generation's image embeddings, bootstrap
Candidate scoring scores the 7 phase names after the model's '<answer>' (the demo's phase task is not scored).
"model" = share of wall time inside model calls (vision pass, generate, scoring passes); "forward" = inside the
model's forward passes alone (outermost module call); peak RSS includes the worker processes.
The length-bucketing line runs the engine's generation path twice on the same videos re-encoded at three frame sizes
(three image-token counts, as from several recorders): batches in arrival order, then by prompt length within each
window of 4 batches; "padding" = share of the prefill's prompt positions that are left padding.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import av  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402
from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration  # noqa: E402

from protocols.tasks import load_task  # noqa: E402
from site_node.evaluation import select_frames  # noqa: E402
from site_node.local_eval import open_data  # noqa: E402
from site_node.model.generate import chat_text, encode_batch, greedy_config  # noqa: E402
from site_node.model.loading import LoadedModel, load_model  # noqa: E402
from site_node.model.pipeline import EvalRequest, ModelTime, answer_videos  # noqa: E402
from site_node.model.prefetch import FramePrefetcher, VideoJob  # noqa: E402
from site_node.model.scoring import candidate_logprobs, model_input_size  # noqa: E402
from site_node.scoring import Record, VideoLabels, score_records  # noqa: E402
from site_node.synthetic.tiny_model import (  # noqa: E402
    TinyConfig,
    _make_stock,
    build_config,
    build_processor,
    build_tokenizer,
    ensure_tiny_model,
)
from site_node.task_runtime import Answer, runtime_for  # noqa: E402


def build_mid_model(out: Path, hidden: int, layers: int) -> Path:
    """A random Qwen2.5-VL at a mid size, built as the tiny one is (its tokenizer and image budget)."""
    if (out / "config.json").is_file():
        return out
    cfg = TinyConfig(
        hidden=hidden, layers=layers, heads=8, kv_heads=4, intermediate=3 * hidden, vision_hidden=hidden // 2
    )
    tok = build_tokenizer(cfg)
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(build_config(tok, cfg))
    eos = [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=eos[1], do_sample=False)
    model.save_pretrained(out)
    build_processor(tok, cfg).save_pretrained(out)
    _make_stock(out)
    return out


def demo_jobs(work: Path, videos: int, seconds: float) -> list[VideoJob]:
    """1-fps frames of the phase videos of one synthetic demo site (made once under `work`)."""
    from site_node.synthetic.formats import synthesize_all

    site = work / f"site-{videos}x{seconds:g}"
    if not (site / "cholec80").is_dir():
        synthesize_all(site, "lakeside-university", videos, 0.2, 11, seconds=seconds)
    store = open_data(site / "cholec80").store
    rt = runtime_for("phase")
    jobs = []
    for ds in store.datasets():
        for v in ds.videos:
            labels = rt.load_labels(store, v)
            frames = select_frames(list(labels.labels), labels.fps or v.fps, 1.0)
            jobs.append(VideoJob(store.path(v.video), labels, tuple(frames), v.fps))
    return jobs


CAMERAS = ((160, 90), (120, 90), (96, 96))  # 16:9, 4:3 and square recorders: three image-token counts


def camera_copy(src: Path, dst: Path, size: tuple[int, int]) -> Path:
    """The video re-encoded at another frame size, as another recorder would have written it (made once)."""
    if dst.is_file():
        return dst
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        fps = Fraction(inp.streams.video[0].average_rate or 25)
        stream = out.add_stream("libx264", rate=fps, options={"preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i, frame in enumerate(inp.decode(video=0)):
            image = frame.reformat(width=size[0], height=size[1], format="yuv420p")
            image.pts, image.time_base = i, 1 / fps
            out.mux(stream.encode(image))
        out.mux(stream.encode(None))
    return dst


def mixed_camera_jobs(work: Path, jobs: list[VideoJob], stride: int = 1) -> list[VideoJob]:
    """Each video at each of the CAMERAS sizes, interleaved (A0 B0 C0 A1 ...), as a store of several recorders;
    every `stride`-th sampled frame (a longer sampling interval: fewer frames per video, more mixed batches)."""
    out = []
    for k, job in enumerate(jobs):
        for w, h in CAMERAS:
            media = camera_copy(job.media, work / f"video{k}-{w}x{h}.mp4", (w, h))
            out.append(VideoJob(media, job.labels, job.frames[::stride], job.fps))
    return out


def bench_bucketing(model_dir: Path, jobs: list[VideoJob], tokens: int, args: argparse.Namespace) -> None:
    """The engine's generation path on frames of three sizes: batches in arrival order vs by prompt length."""
    lm = load_model(model_dir, device="cpu")
    meter, n = Meter(lm), sum(len(j.frames) for j in jobs)
    prompt = load_task("phase").render_prompt()
    with FramePrefetcher(model_dir, workers=args.workers, depth=args.depth) as pf:
        engine(lm, jobs[:1], EvalRequest(prompt, {}, 2, args.batch), pf)  # warm-up
        print(f"\nlength bucketing: {model_dir.name}, {n} frames of {len(jobs)} videos from {len(CAMERAS)} camera "
              f"sizes, batch {args.batch}, {tokens} tokens, frame stride {args.bucket_stride}")  # fmt: skip
        print(f"{'batches':<28}{'frames/s':>9}{'padding':>9}{'prompt tok':>11}{'prefill tok':>12}")
        answers = []
        for name, window in (("arrival order", 0), (f"by length (window {4 * args.batch})", None)):
            req = EvalRequest(prompt, {}, tokens, args.batch, tokens, bucket_window=window)
            with meter.run() as m:
                answers.append(engine(lm, jobs, req, pf))
            t = req.timing
            print(f"{name:<28}{n / m['wall']:>9.1f}{t.padding_share:>9.1%}{t.prompt_tokens:>11}{t.batch_tokens:>12}")
        same = [a.text for *_, a in answers[0]] == [a.text for *_, a in answers[1]]
        print(f"answers identical, frame for frame: {same}")


class Meter:
    """Wall time, time inside the outermost forward pass, and peak RSS of this process and its children."""

    def __init__(self, lm: LoadedModel) -> None:
        self.forward, self._depth, self._t0 = 0.0, 0, 0.0
        self.peak_rss, self._stop = 0, threading.Event()
        for module in (lm.model, lm.model.model.visual):
            module.register_forward_pre_hook(self._enter)
            module.register_forward_hook(self._leave)

    def _enter(self, *_: Any) -> None:
        if self._depth == 0:
            self._t0 = time.perf_counter()
        self._depth += 1

    def _leave(self, *_: Any) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.forward += time.perf_counter() - self._t0

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.05):
            try:
                rss = me.memory_info().rss + sum(c.memory_info().rss for c in me.children(recursive=True))
            except psutil.Error:
                continue
            self.peak_rss = max(self.peak_rss, rss)

    @contextmanager
    def run(self) -> Iterator[dict[str, float]]:
        self.forward, self.peak_rss = 0.0, 0
        self._stop.clear()
        sampler = threading.Thread(target=self._sample, daemon=True)
        sampler.start()
        out: dict[str, float] = {}
        t0 = time.perf_counter()
        try:
            yield out
        finally:
            out["wall"] = time.perf_counter() - t0
            self._stop.set()
            sampler.join()
            out["forward"], out["peak_rss"] = self.forward, float(self.peak_rss)


def frame_at(media: Path, index: int) -> Any:
    """The naive way: open the video and decode from its start up to the wanted frame (converting only that one)."""
    with av.open(str(media)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if i == index:
                return frame.to_image()
    raise ValueError(f"{media} has no frame {index}")


def naive(lm: LoadedModel, jobs: list[VideoJob], tokens: int, candidates: dict[str, str], t: ModelTime) -> list:
    prompt = load_task("phase").render_prompt()
    text = chat_text(lm.processor, prompt)
    config = greedy_config(lm.model, tokens)
    config.min_new_tokens = tokens
    out = []
    for k, job in enumerate(jobs):
        for frame in job.frames:
            image = frame_at(job.media, job.labels.video_frame(frame, job.fps))
            enc = encode_batch(lm, [image], text)
            t0 = time.perf_counter()
            with torch.inference_mode():
                ids = lm.model.generate(**enc, generation_config=config)
            t.generate += time.perf_counter() - t0
            answer = lm.processor.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)[0]
            scores = None
            if candidates:
                t0 = time.perf_counter()
                scores = candidate_logprobs(lm, [image], prompt, [answer.strip()], candidates)[0]
                t.scoring += time.perf_counter() - t0
            out.append((k, frame, Answer(answer.strip(), scores, model_input_size(lm, image))))
    return out


def engine(lm: LoadedModel, jobs: list[VideoJob], req: EvalRequest, prefetcher: FramePrefetcher) -> list:
    return list(answer_videos(lm, jobs, req, prefetcher))


def summarise(jobs: list[VideoJob], answers: list) -> None:
    """The task's metrics with the video-level bootstrap (part of the whole-task paths)."""
    rt = runtime_for("phase")
    records = [Record(str(k), f, a, "bench", "phase") for k, f, a in answers]
    labels = [VideoLabels("bench", str(k), j.labels) for k, j in enumerate(jobs)]
    score_records(rt, labels, records, seed=0, replicates=1000)


def measure(name: str, meter: Meter, n: int, body: Callable[[ModelTime], Any]) -> dict[str, float]:
    t = ModelTime()
    with meter.run() as m:
        body(t)
    return {"name": name, "fps": n / m["wall"], "model": t.total / m["wall"], "forward": m["forward"] / m["wall"],
            "rss": m["peak_rss"] / 2**20, "wall": m["wall"]}  # fmt: skip


def bench_model(label: str, model_dir: Path, jobs: list[VideoJob], tokens: list[int], args: argparse.Namespace) -> None:
    lm = load_model(model_dir, device="cpu")
    meter = Meter(lm)
    n = sum(len(j.frames) for j in jobs)
    cands = {name: f"{name}</answer>" for name in load_task("phase").label_names}
    prompt = load_task("phase").render_prompt()
    t0 = time.perf_counter()
    with FramePrefetcher(model_dir, workers=args.workers, depth=args.depth) as pf:
        engine(lm, jobs[:1], EvalRequest(prompt, {}, 2, args.batch), pf)  # warm-up: workers load the processor
        started = time.perf_counter() - t0
        print(f"\n{label}: {model_dir.name}, {n} frames of {len(jobs)} videos, batch {args.batch}, "
              f"{args.workers} frame workers (queue depth {args.depth}; started and warmed up in {started:.1f}s "
              "before timing, as the site engine keeps them across jobs)")  # fmt: skip
        print(f"{'tokens':>6} {'path':<12}{'frames/s':>9}{'x naive':>9}{'model':>8}{'forward':>9}{'peak RSS':>10}")
        for tok in tokens:
            rows = []
            for task, c in (("gen", {}), ("task", cands)):
                base = measure(f"naive-{task}", meter, n, partial(_naive_task, lm, jobs, tok, c, task))
                req = partial(EvalRequest, prompt, c, tok, args.batch, tok)
                eng = measure(f"engine-{task}", meter, n, partial(_engine_task, lm, jobs, req, pf, task))
                rows += [(base, base), (eng, base)]
            for row, base in rows:
                print(f"{tok:>6} {row['name']:<12}{row['fps']:>9.1f}{row['fps'] / base['fps']:>8.2f}x"
                      f"{row['model']:>8.0%}{row['forward']:>9.0%}{row['rss']:>8.0f}MB")  # fmt: skip


def _naive_task(lm: LoadedModel, jobs: list[VideoJob], tok: int, c: dict[str, str], task: str, t: ModelTime) -> None:
    answers = naive(lm, jobs, tok, c, t)
    if task == "task":
        summarise(jobs, answers)


def _engine_task(
    lm: LoadedModel,
    jobs: list[VideoJob],
    req: Callable[[ModelTime], EvalRequest],
    pf: FramePrefetcher,
    task: str,
    t: ModelTime,
) -> None:
    answers = engine(lm, jobs, req(t), pf)
    if task == "task":
        summarise(jobs, answers)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=ROOT / ".cache" / "bench-engine")
    p.add_argument("--videos", type=int, default=2, help="synthetic phase videos (the demo site has 6)")
    p.add_argument("--seconds", type=float, default=24.0, help="length of each video (the demo's is 24)")
    p.add_argument("--tokens", default="32,256", help="fixed generation lengths for the tiny model")
    p.add_argument("--mid-tokens", default="32", help="fixed generation lengths for the mid-size model ('' skips it)")
    p.add_argument("--mid-hidden", type=int, default=512)
    p.add_argument("--mid-layers", type=int, default=4)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--depth", type=int, default=32, help="frames each worker may prepare ahead")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--bucket-tokens", type=int, default=32, help="generation length of the bucketing line (0 skips)")
    p.add_argument("--bucket-stride", type=int, default=1, help="bucketing line: every n-th 1-fps frame per video")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    jobs = demo_jobs(args.work, args.videos, args.seconds)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    tiny = [int(x) for x in args.tokens.split(",") if x]
    if tiny:
        bench_model("tiny", ensure_tiny_model(ROOT / ".cache" / "models"), jobs, tiny, args)
    if args.bucket_tokens:
        mixed = mixed_camera_jobs(args.work, jobs, args.bucket_stride)
        bench_bucketing(ensure_tiny_model(ROOT / ".cache" / "models"), mixed, args.bucket_tokens, args)
    mid = [int(x) for x in args.mid_tokens.split(",") if x]
    if mid:
        model = build_mid_model(
            args.work / f"mid-h{args.mid_hidden}-l{args.mid_layers}", args.mid_hidden, args.mid_layers
        )
        bench_model(f"mid-size (hidden {args.mid_hidden}, {args.mid_layers} layers)", model, jobs, mid, args)


if __name__ == "__main__":
    main()
