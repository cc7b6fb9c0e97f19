"""GPU benchmark on a randomly initialised Qwen2.5-VL-7B (no download): hashing, evaluation, LoRA and DP steps.

Run on a GPU machine:  HF_HUB_OFFLINE=1 .venv/bin/python bench/gpu_7b.py --work /tmp/bench7b
CPU smoke test:        .venv/bin/python bench/gpu_7b.py --tiny --work /tmp/benchtiny --results /tmp/R.md
Results are appended to bench/RESULTS.md (or --results) with the device named.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration  # noqa: E402

from protocols.adapters import decode_state, encode_state, serialized_nbytes, state_nbytes  # noqa: E402
from protocols.finetune import DpMode, DpPlan, LoraPlan  # noqa: E402
from protocols.model_ref import manifest_hash  # noqa: E402
from protocols.tasks import load_task  # noqa: E402
from site_node.answer_format import hierarchical_target  # noqa: E402
from site_node.model.generate import chat_text, encode_batch, greedy_config  # noqa: E402
from site_node.model.loading import LoadedModel, load_model  # noqa: E402
from site_node.synthetic import render  # noqa: E402
from site_node.synthetic.tiny_model import TinyConfig, _make_stock, build_config, build_processor, build_tokenizer  # noqa: E402
from site_node.training.dp import DpSchedule, DpTrainer  # noqa: E402
from site_node.training.examples import encode_batch as encode_train_batch  # noqa: E402
from site_node.training.lora import (  # noqa: E402
    adapter_state,
    attach_lora,
    detach_lora,
    sequence_losses,  # noqa: E402
    training_mode,
)

_spec = importlib.util.spec_from_file_location("gpu_engine", Path(__file__).with_name("gpu_engine.py"))
assert _spec and _spec.loader
gpu_engine = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_engine)

# Qwen2.5-VL-7B-Instruct's published configuration (its config.json, in qwen2_5_vl_7b.json), minus token ids
# (ours come from the local tokenizer). LoRA r=16 on the language model's q,k,v,o,gate,up,down = 40,370,176 parameters.
_CONFIG_7B = json.loads(Path(__file__).with_name("qwen2_5_vl_7b.json").read_text(encoding="utf-8"))
TEXT_7B, VISION_7B = _CONFIG_7B["text_config"], _CONFIG_7B["vision_config"]
LORA_7B_PARAMS = 40_370_176
FRAME_7B = (854, 480)  # Cholec80's frame size
FRAME_TINY = (112, 84)


def config_7b(tok: Any) -> Qwen2_5_VLConfig:
    """The 7B architecture with this tokenizer's special-token ids (vocabulary stays 152,064 wide)."""
    ids = {
        t: tok.convert_tokens_to_ids(t)
        for t in ("<|endoftext|>", "<|im_end|>", "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    }
    return Qwen2_5_VLConfig(
        text_config={
            **TEXT_7B,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config=VISION_7B,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def build_random_model(out_dir: Path, tiny: bool, device: torch.device, dtype: torch.dtype) -> dict[str, float]:
    """Write a loadable model directory with random weights; returns build and save seconds."""
    # Qwen2.5-VL's default image budget for the 7B; the tiny model keeps its own small one.
    cfg = TinyConfig() if tiny else TinyConfig(min_pixels=56 * 56, max_pixels=12_845_056)
    tok = build_tokenizer(cfg)
    processor = build_processor(tok, cfg)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen2_5_VLForConditionalGeneration(build_config(tok, cfg) if tiny else config_7b(tok))
    finally:
        torch.set_default_dtype(default)
    eos = [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=eos[1], do_sample=False)
    _sync(device)
    built = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    _make_stock(out_dir)  # as the tiny builder does: processor files read like a Hub checkpoint's
    saved = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    del model
    _free(device)
    return {
        "build_s": built,
        "save_s": saved,
        "parameters": float(n_params),
        "weights_gb": sum(p.stat().st_size for p in out_dir.glob("*.safetensors")) / 1e9,
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None


def frames(n: int, size: tuple[int, int], seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    names = render.phase_names()
    return [Image.fromarray(render.render_frame(i % len(names), 0.2, rng, size=size)) for i in range(n)]


def eval_throughput(lm: LoadedModel, images: list[Image.Image], batch: int, new_tokens: int) -> dict[str, float]:
    """The engine's generation path (encode_batch, greedy config, generate, decode), timed over whole batches.
    Random weights rarely emit EOS, so every frame generates about `new_tokens` tokens: a worst case."""
    text = chat_text(lm.processor, load_task("phase").render_prompt())
    config = greedy_config(lm.model, new_tokens)
    pad = config.pad_token_id

    def one(imgs: list[Image.Image]) -> int:
        enc = encode_batch(lm, imgs, text)
        with torch.inference_mode():
            out = lm.model.generate(**enc, generation_config=config)
        new = out[:, enc["input_ids"].shape[1] :]
        lm.processor.batch_decode(new, skip_special_tokens=True)
        return int((new != pad).sum())

    one(images[:batch])  # warm-up: kernels, allocator
    _sync(lm.device)
    t0, tokens, done = time.perf_counter(), 0, 0
    for start in range(0, len(images) - batch + 1, batch):
        tokens += one(images[start : start + batch])
        done += batch
    _sync(lm.device)
    dt = time.perf_counter() - t0
    return {"batch": batch, "frames": done, "seconds": dt, "frames_per_s": done / dt, "gen_tokens_per_s": tokens / dt}


def _train_batch(lm: LoadedModel, images: list[Image.Image]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    names = render.phase_names()
    answers = [hierarchical_target(names[i % len(names)], ["grasper", "hook"]) for i in range(len(images))]
    return encode_train_batch(lm.processor, images, answers, load_task("phase").render_prompt(), lm.device, lm.dtype)


def _timed(device: torch.device, fn: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up step
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / repeats


def lora_bench(lm: LoadedModel, images: list[Image.Image], steps: int, checkpointing: bool) -> dict[str, Any]:
    """LoRA r=16 (language model attention + MLP): step time and peak memory at this batch."""
    model = attach_lora(lm, LoraPlan())
    try:
        params = [p for p in model.parameters() if p.requires_grad]
        optim = torch.optim.AdamW(params, lr=1e-4)
        batch, labels = _train_batch(lm, images)
        training_mode(model, True, checkpointing)

        def step() -> None:
            loss = sequence_losses(model, batch, labels).mean()
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()

        _free(lm.device)
        _peak_reset(lm.device)
        seconds = _timed(lm.device, step, steps)
        peak = _peak_gb(lm.device)
        training_mode(model, False, checkpointing)
        state = adapter_state(model)
    finally:
        detach_lora(lm, model)
    return {
        "batch": len(images),
        "tokens_per_seq": int(batch["input_ids"].shape[1]),
        "checkpointing": checkpointing,
        "step_s": seconds,
        "peak_gb": peak,
        "trainable": sum(p.numel() for p in params),
        "state": state,
    }


def ghost_bench(lm: LoadedModel, images: list[Image.Image]) -> dict[str, Any]:
    """One opacus ghost-clipping step (per-sequence loss, no activation checkpointing) and one noise-only step."""
    model = attach_lora(lm, LoraPlan())
    try:
        params = [p for p in model.parameters() if p.requires_grad]
        dp = DpPlan(target_epsilon=8.0, delta=1e-5, max_grad_norm=1.0, noise_multiplier=1.0, mode=DpMode.GHOST)
        schedule = DpSchedule(noise_multiplier=1.0, sample_rate=len(images) / 100, steps=1, n_units=100)
        trainer = DpTrainer(model, torch.optim.AdamW(params, lr=1e-4), dp, schedule)
        batch, labels = _train_batch(lm, images)
        training_mode(model, True, False)
        try:
            _free(lm.device)
            _peak_reset(lm.device)
            step_s = _timed(lm.device, lambda: trainer.step(sequence_losses(trainer.module, batch, labels)), 1)
            peak = _peak_gb(lm.device)
            noise_s = _timed(lm.device, trainer.noise_step, 1)
        finally:
            trainer.close()
            training_mode(model, False, False)
    finally:
        detach_lora(lm, model)
    return {"batch": len(images), "step_s": step_s, "peak_gb": peak, "noise_only_step_s": noise_s}


def wire_bench(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    t0 = time.perf_counter()
    arrays, meta = encode_state(state, "bf16")
    back = decode_state(arrays, meta)
    seconds = time.perf_counter() - t0
    exact = all(torch.equal(back[k].view(torch.int16), state[k].to(torch.bfloat16).view(torch.int16)) for k in state)
    expected = state_nbytes(state, "bf16")
    return {
        "adapter_params": sum(t.numel() for t in state.values()),
        "bf16_mb": expected / 1e6,
        "payload_mb": serialized_nbytes(arrays) / 1e6,
        "payload_ratio": serialized_nbytes(arrays) / expected,
        "bit_exact": exact,
        "encode_decode_s": seconds,
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
    return f"CPU {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    work = Path(args.work or tempfile.mkdtemp(prefix="bench7b-"))
    model_dir = work / "model"
    shutil.rmtree(model_dir, ignore_errors=True)
    model_dir.mkdir(parents=True)
    out: dict[str, Any] = {
        "device": device_name(device),
        "model": "tiny" if args.tiny else "qwen2.5-vl-7b (random)",
        "dtype": str(dtype).replace("torch.", ""),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    out["build"] = build_random_model(model_dir, args.tiny, device, dtype)
    t0 = time.perf_counter()
    out["manifest_sha256"] = manifest_hash(model_dir, cache_dir=work)  # cache beside, not inside, the model
    out["manifest_hash_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    lm = load_model(model_dir, device=str(device), dtype=out["dtype"])
    out["load_s"] = time.perf_counter() - t0
    size = FRAME_TINY if args.tiny else FRAME_7B
    images = frames(max(args.batches) * args.eval_rounds, size)
    out["eval"] = [eval_throughput(lm, images[: b * args.eval_rounds], b, args.new_tokens) for b in args.batches]
    images = frames(max(args.engine_batches), size)
    out["engine"] = gpu_engine.engine_bench(lm, images, args.engine_batches, args.answer_tokens, args.decode_steps)
    train_images = images[: args.train_batch]
    lora = lora_bench(lm, train_images, args.lora_steps, checkpointing=True)
    out["wire"] = wire_bench(lora.pop("state"))
    out["lora"] = lora
    out["ghost"] = ghost_bench(lm, images[: args.dp_batch])
    if not args.keep:
        shutil.rmtree(model_dir, ignore_errors=True)
    return out


def markdown(r: dict[str, Any], argv: list[str]) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    b, lora, ghost, wire = r["build"], r["lora"], r["ghost"], r["wire"]
    mem = lambda v: "n/a (CPU)" if v is None else f"{v:.1f} GB"  # noqa: E731
    lines = [
        f"## {r['model']} on {r['device']} ({when})",
        "",
        f"`python bench/gpu_7b.py {' '.join(argv)}`; {r['dtype']}, torch {r['torch']}, "
        f"transformers {r['transformers']}",
        "",
        "| measure | value |",
        "|---|---|",
        f"| parameters / weights on disk | {int(b['parameters']):,} / {b['weights_gb']:.3f} GB |",
        f"| build random model / save_pretrained | {b['build_s']:.1f} s / {b['save_s']:.1f} s |",
        f"| manifest sha256 (cold) | {r['manifest_hash_s']:.1f} s |",
        f"| load_model (engine path) | {r['load_s']:.1f} s |",
    ]
    for e in r["eval"]:
        lines.append(
            f"| evaluation, batch {e['batch']} ({e['frames']} frames) | {e['frames_per_s']:.2f} frames/s, "
            f"{e['gen_tokens_per_s']:.0f} generated tokens/s |"
        )
    lines += gpu_engine.markdown_rows(r["engine"])
    lines += [
        f"| LoRA step, batch {lora['batch']} x {lora['tokens_per_seq']} tokens, activation checkpointing | "
        f"{lora['step_s']:.2f} s, peak {mem(lora['peak_gb'])} |",
        f"| LoRA trainable parameters | {lora['trainable']:,} |",
        f"| opacus ghost step, batch {ghost['batch']} (no checkpointing) | {ghost['step_s']:.2f} s, peak "
        f"{mem(ghost['peak_gb'])}; noise-only step {ghost['noise_only_step_s']:.3f} s |",
        f"| adapter on the wire (bf16) | {wire['bf16_mb']:.1f} MB, payload x{wire['payload_ratio']:.4f}, "
        f"bit exact: {wire['bit_exact']}, encode+decode {wire['encode_decode_s']:.2f} s |",
        "",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny configuration on the CPU (the test's smoke run)")
    p.add_argument("--device", default="auto")
    p.add_argument("--work", help="scratch folder for the model directory (needs ~17 GB for the 7B)")
    p.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"), help="Markdown file to append to")
    p.add_argument("--batches", default="1,8,32", type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--eval-rounds", type=int, default=2, help="timed batches per batch size")
    p.add_argument("--new-tokens", type=int, default=None, help="generated tokens per frame (64; tiny: 8)")
    p.add_argument("--train-batch", type=int, default=4)
    p.add_argument("--dp-batch", type=int, default=4)
    p.add_argument("--lora-steps", type=int, default=3, help="timed LoRA steps after one warm-up step")
    p.add_argument("--keep", action="store_true", help="keep the model directory")
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    p.add_argument("--engine-batches", type=ints, default=None, help="engine images/s batches (1,8,32,64)")
    p.add_argument("--answer-tokens", type=ints, default=None, help="forced answer lengths (256,512)")
    p.add_argument("--decode-steps", type=int, default=None, help="timed decode steps at batch 1 (128)")
    args = p.parse_args(argv)
    if args.new_tokens is None:
        args.new_tokens = 8 if args.tiny else 64
    args.engine_batches = args.engine_batches or ([1, 2] if args.tiny else [1, 8, 32, 64])
    args.answer_tokens = args.answer_tokens or ([4] if args.tiny else [256, 512])
    args.decode_steps = args.decode_steps or (4 if args.tiny else 128)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    result = run(args)
    text = markdown(result, argv)
    with open(args.results, "a", encoding="utf-8") as fh:
        fh.write(text)
    print(text)
    print(json.dumps(result, indent=1, default=str))
    return result


if __name__ == "__main__":
    main()
