"""Build the tiny Qwen2.5-VL test model (tokenizer, processor, weights) offline, cached per source hash."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import tokenizers
import torch
import transformers
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from protocols.errors import ModelError
from protocols.tasks import load_task
from site_node.model.loading import ImageTextQwen2_5_VLProcessor
from site_node.synthetic import render
from site_node.synthetic.warmup import WarmupConfig, target_answer, warm_up
from site_node.synthetic.warmup_targets import WARMUP_TASKS, render_scenes, task_target

# Qwen2.5-VL's special tokens (ids follow the BPE vocabulary, as in the real tokenizer) ...
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# ... and its added tokens that decode as text.
ADDED_TOKENS = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
# Qwen2's pre-tokenizer split.
_PRETOKENIZE = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# The Qwen2-VL chat template (as shipped with Qwen2.5-VL-7B-Instruct).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: "
    "{% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}"
    "<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Files whose content defines the built model: a change to any of them means a new cache entry.
_SITE_NODE = Path(__file__).resolve().parents[1]
_SOURCES = (
    _SITE_NODE / "synthetic" / "tiny_model.py",
    _SITE_NODE / "synthetic" / "warmup.py",
    _SITE_NODE / "synthetic" / "warmup_targets.py",
    _SITE_NODE / "synthetic" / "formats.py",
    _SITE_NODE / "synthetic" / "render.py",
    _SITE_NODE / "synthetic" / "instruments.py",
    _SITE_NODE / "synthetic" / "videos.py",
    _SITE_NODE / "model" / "loading.py",
    _SITE_NODE / "model" / "generate.py",
    _SITE_NODE / "answer_format.py",
)


@dataclass(frozen=True)
class TinyConfig:
    """Sizes of the tiny model; the image budget (112x112 at most) keeps it to 12-16 visual tokens."""

    vocab_size: int = 1024
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 256
    vision_hidden: int = 64
    vision_depth: int = 2
    min_pixels: int = 56 * 56
    max_pixels: int = 112 * 112


def _tokenizer_corpus() -> list[str]:
    task = load_task("phase")
    words = [s for lab in task.labels for s in (lab.name, *lab.synonyms)]
    rng = np.random.default_rng(0)
    _, scenes = render_scenes([k % len(task.label_names) for k in range(28)], rng, frames_per_scene=28)
    return [
        "You are a helpful assistant.",
        *(load_task(t).render_prompt() for t in WARMUP_TASKS),
        *(target_answer(name, tuple(render.phase_scene(name).tools)) for name in task.label_names),
        *(task_target(t, scene) for scene in scenes for t in WARMUP_TASKS),
        " ".join(words),
        "The laparoscopic cholecystectomy shows the gallbladder, cystic duct, cystic artery, liver and clips.",
        "Question: which instruments are visible? grasper, bipolar, hook, scissors, clipper, irrigator, specimen bag.",
        "Is the critical view of safety achieved? yes or no. Is there bleeding? Describe the surgical scene.",
        "0 1 2 3 4 5 6 7 8 9 10 100 0.5 [x1, y1, x2, y2]",
    ] * 20


def build_tokenizer(cfg: TinyConfig) -> Qwen2Tokenizer:
    """A byte-level BPE trained here on task text, with Qwen2's pre-tokenizer and special tokens."""
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PRETOKENIZE), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size - len(SPECIAL_TOKENS) - len(ADDED_TOKENS),
        special_tokens=[],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(_tokenizer_corpus(), trainer)
    merges = json.loads(bpe.to_str())["model"]["merges"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in merges]
    tok = Qwen2Tokenizer(
        vocab=bpe.get_vocab(),
        merges=merges,
        # mypy: transformers' stubs: token ids are int for one token; unk_token may be None
        unk_token=None,  # type: ignore[arg-type]
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=[t for t in SPECIAL_TOKENS if t not in ("<|im_end|>", "<|endoftext|>")],
        padding_side="left",
        model_max_length=32768,
    )
    tok.add_tokens(list(ADDED_TOKENS))
    return tok


def build_processor(tok: Qwen2Tokenizer, cfg: TinyConfig) -> ImageTextQwen2_5_VLProcessor:
    """Image+text processor with the PIL image processor, so the build is the same with or without torchvision.

    It saves the files a stock Qwen2.5-VL processor reads (see _make_stock for the video section).
    """
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels, patch_size=14, temporal_patch_size=2, merge_size=2
    )
    return ImageTextQwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tok, chat_template=CHAT_TEMPLATE)


def build_config(tok: Qwen2Tokenizer, cfg: TinyConfig) -> Qwen2_5_VLConfig:
    """A Qwen2.5-VL config at toy sizes, with the special-token ids of `tok`."""
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    half = cfg.hidden // cfg.heads // 2
    # M-RoPE splits the rotary half into temporal, height and width sections in Qwen2.5-VL's 2:3:3 ratio
    temporal = half // 4
    return Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=((len(tok) + 63) // 64) * 64,
            hidden_size=cfg.hidden,
            intermediate_size=cfg.intermediate,
            num_hidden_layers=cfg.layers,
            num_attention_heads=cfg.heads,
            num_key_value_heads=cfg.kv_heads,
            max_position_embeddings=4096,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 1e6,
                "mrope_section": [temporal, (half - temporal) // 2, (half - temporal) // 2],
            },
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
            tie_word_embeddings=False,
        ),
        vision_config=dict(
            depth=cfg.vision_depth,
            hidden_size=cfg.vision_hidden,
            intermediate_size=2 * cfg.vision_hidden,
            num_heads=2,
            out_hidden_size=cfg.hidden,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            fullatt_block_indexes=[cfg.vision_depth - 1],
        ),
        # mypy: transformers' stubs: token ids are int for one token; unk_token may be None
        image_token_id=ids["<|image_pad|>"],  # type: ignore[arg-type]
        # mypy: transformers' stubs: token ids are int for one token; unk_token may be None
        video_token_id=ids["<|video_pad|>"],  # type: ignore[arg-type]
        # mypy: transformers' stubs: token ids are int for one token; unk_token may be None
        vision_start_token_id=ids["<|vision_start|>"],  # type: ignore[arg-type]
        # mypy: transformers' stubs: token ids are int for one token; unk_token may be None
        vision_end_token_id=ids["<|vision_end|>"],  # type: ignore[arg-type]
        tie_word_embeddings=False,
    )


# Stock Qwen2VLVideoProcessor settings, written so that plain AutoProcessor loads the directory
# wherever torchvision exists (without torchvision no video processor can be built to save them).
_VIDEO_PROCESSOR = {
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "do_sample_frames": False,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "max_frames": 768,
    "max_video_tokens": 128000,
    "merge_size": 2,
    "min_frames": 4,
    "patch_size": 14,
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "return_metadata": False,
    "size": {"longest_edge": 602112, "shortest_edge": 100352},
    "temporal_patch_size": 2,
    "video_processor_type": "Qwen2VLVideoProcessor",
}


def _make_stock(out_dir: Path) -> None:
    """Make the saved processor files read like a Hub Qwen2.5-VL checkpoint, so the real loader path runs."""
    for name in ("processor_config.json", "tokenizer_config.json"):
        path = out_dir / name
        if not path.is_file():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        if name == "processor_config.json":
            data.setdefault("video_processor", _VIDEO_PROCESSOR)
        if "processor_class" in data:
            data["processor_class"] = "Qwen2_5_VLProcessor"
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def build_tiny_model(
    out_dir: Path,
    seed: int = 0,
    warmup: bool = True,
    progress: bool = True,
    *,
    warmup_config: WarmupConfig | None = None,
) -> Path:
    """Write a complete, loadable model directory; the same seed gives the same model."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = TinyConfig()
    tok = build_tokenizer(cfg)
    processor = build_processor(tok, cfg)
    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the caller's RNG
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(build_config(tok, cfg))
    model.generation_config = GenerationConfig(
        eos_token_id=[tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")],
        pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        do_sample=False,
    )
    if warmup:
        warm_up(model, processor, seed=seed, cfg=warmup_config or WarmupConfig(), progress=progress)
    model.eval()
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    _make_stock(out_dir)
    return out_dir


def cache_key(seed: int) -> str:
    """Hash of everything that shapes the built model: builder sources, seed and library versions."""
    h = hashlib.sha256()
    for path in _SOURCES:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    for task in WARMUP_TASKS:  # the prompts and vocabularies the warm-up teaches
        h.update(resources.files("protocols.tasks").joinpath(f"{task}.yaml").read_bytes())
    h.update(
        f"seed={seed} torch={torch.__version__} transformers={transformers.__version__} "
        f"tokenizers={tokenizers.__version__}".encode()
    )
    return h.hexdigest()[:16]


def ensure_tiny_model(cache_root: Path, seed: int = 0) -> Path:
    """The cached tiny model for this source and seed, built (into a temp dir, then renamed) if missing."""
    cache_root = Path(cache_root)
    target = cache_root / f"tiny-qwen2_5_vl-{cache_key(seed)}"
    if (target / "config.json").is_file():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=cache_root))
    try:
        build_tiny_model(tmp, seed=seed, warmup=True, progress=True)
        try:
            os.rename(tmp, target)  # atomic: readers never see a half-written model
        except OSError:
            if not (target / "config.json").is_file():  # lost a race only if the winner finished
                raise
    except (OSError, RuntimeError) as exc:
        raise ModelError(f"could not build the tiny model into {target}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
