"""Load a Qwen2.5-VL model directory (the real Surg-R1 or the tiny test model) by one code path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
from transformers.processing_utils import ProcessorMixin
from transformers.utils import is_torchvision_available

from protocols.errors import ConfigError, ModelError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Any one of each group must be present for a directory to be a loadable model.
_REQUIRED_FILES = {
    "config": ("config.json",),
    "weights": (
        "model.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "pytorch_model.bin.index.json",
    ),
    "tokenizer": ("tokenizer.json", "vocab.json"),
    "image processor config": ("preprocessor_config.json", "processor_config.json"),
}


class ImageTextQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL processor without the video processor, which needs torchvision.

    Loads the same saved directory as the stock processor; the site node feeds video frames as
    images (decoded with PyAV), so nothing is lost.
    """

    def __init__(
        self, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None, **kwargs: Any
    ) -> None:
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        # Skip Qwen2_5_VLProcessor.__init__: it requires a video processor.
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


@dataclass
class LoadedModel:
    """A model ready for generation, with the processor that belongs to it."""

    model: Any
    processor: Any
    path: Path
    device: torch.device
    dtype: torch.dtype


def check_model_dir(path: Path) -> None:
    """ModelError naming the directory and every missing piece, before transformers gives a vaguer one."""
    if not path.exists():
        raise ModelError(f"model directory {path} does not exist")
    if not path.is_dir():
        raise ModelError(f"model path {path} is not a directory")
    missing = [
        f"{what} (one of {', '.join(names)})"
        for what, names in _REQUIRED_FILES.items()
        if not any((path / n).is_file() for n in names)
    ]
    if missing:
        raise ModelError(f"model directory {path} is incomplete: missing {'; '.join(missing)}")


def resolve_device(device: str) -> torch.device:
    """'auto' is the GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but no CUDA GPU is available")
    if resolved.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' is bfloat16 on a GPU (float16 where bf16 is unsupported) and float32 on the CPU."""
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in _DTYPES:
        raise ConfigError(f"dtype must be 'auto' or one of {sorted(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


def load_processor(path: Path) -> Any:
    """The stock processor where it loads; the image+text subclass where it needs torchvision."""
    try:
        processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    except ImportError as exc:
        if is_torchvision_available():
            raise ModelError(f"cannot load the processor of {path}: {exc}") from exc
        try:
            processor = ImageTextQwen2_5_VLProcessor.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, TypeError, KeyError) as inner:
            raise ModelError(f"cannot load the processor of {path}: {inner}") from inner
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ModelError(f"cannot load the processor of {path}: {exc}") from exc
    # Batched generation with a decoder-only model needs the padding on the left.
    processor.tokenizer.padding_side = "left"
    return processor


def load_model(path: Path, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """Load model and processor from a local directory, never from the network."""
    path = Path(path)
    check_model_dir(path)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    processor = load_processor(path)
    try:
        model = AutoModelForImageTextToText.from_pretrained(
            path,
            local_files_only=True,
            dtype=torch_dtype,
            # Straight onto the GPU: a 7B model in float32 on the CPU first would need ~30 GB of RAM.
            device_map=str(torch_device) if torch_device.type == "cuda" else None,
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"cannot load the model weights of {path}: {exc}") from exc
    if torch_device.type != "cuda":
        # mypy: transformers' stubs type .to() as taking a model
        model = model.to(torch_device)  # type: ignore[arg-type]
    model.eval()
    return LoadedModel(model=model, processor=processor, path=path, device=torch_device, dtype=torch_dtype)
