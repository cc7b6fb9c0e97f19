"""LoRA adapter tensors on the wire (numpy arrays + string metadata, bit exact) and as a PEFT directory."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from protocols.errors import ContractError, ProtocolError
from protocols.finetune import LoraPlan, WireDtype

ENCODING_VERSION = "surgfed-adapter/1"
ADAPTER_ARRAY = "adapter"  # the one array a reply carries: every tensor, flattened and concatenated
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_TORCH = {WireDtype.BF16: torch.bfloat16, WireDtype.FP16: torch.float16, WireDtype.FP32: torch.float32}
# numpy has no bfloat16: its raw bits travel as uint16 and are reinterpreted on arrival.
_NUMPY = {
    WireDtype.BF16: np.dtype(np.uint16),
    WireDtype.FP16: np.dtype(np.float16),
    WireDtype.FP32: np.dtype(np.float32),
}


def wire_dtype(value: str | WireDtype) -> WireDtype:
    try:
        return WireDtype(value)
    except ValueError:
        raise ContractError(f"wire dtype must be one of {[w.value for w in WireDtype]}, got {value!r}") from None


def torch_dtype(value: str | WireDtype) -> torch.dtype:
    return _TORCH[wire_dtype(value)]


def encode_state(
    state: Mapping[str, torch.Tensor], wire: str | WireDtype
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """One flat array (bf16 as raw uint16 bits) and metadata naming the wire dtype and each tensor's name and shape.

    One array, not one per tensor: each serialised array carries a ~128-byte header and a key, which on a
    small adapter would push the payload well past its size in the wire dtype.
    """
    w = wire_dtype(wire)
    if not state:
        raise ContractError("cannot encode an empty adapter state")
    parts, tensors = [], []
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            got = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ContractError(f"adapter tensor {name!r} must be a floating-point torch.Tensor, got {got}")
        parts.append(tensor.detach().to("cpu", _TORCH[w]).reshape(-1))
        tensors.append([name, list(tensor.shape)])
    flat = torch.cat(parts)
    array = flat.view(torch.int16).numpy().view(np.uint16) if w is WireDtype.BF16 else flat.numpy()
    meta = {"encoding": ENCODING_VERSION, "wire-dtype": w.value, "tensors": json.dumps(tensors)}
    return {ADAPTER_ARRAY: array}, meta


def _layout(arrays: Mapping[str, np.ndarray], meta: Mapping[str, str]) -> tuple[WireDtype, list[tuple[str, list[int]]]]:
    if meta.get("encoding") != ENCODING_VERSION:
        raise ContractError(f"adapter encoding must be {ENCODING_VERSION!r}, got {meta.get('encoding')!r}")
    w = wire_dtype(str(meta.get("wire-dtype")))
    if set(arrays) != {ADAPTER_ARRAY}:
        raise ContractError(f"an adapter travels as one array {ADAPTER_ARRAY!r}, got arrays {sorted(arrays)[:5]}")
    try:
        tensors = [(str(name), [int(d) for d in shape]) for name, shape in json.loads(str(meta["tensors"]))]
    except (KeyError, ValueError, TypeError) as exc:
        raise ContractError(f"adapter metadata needs a JSON 'tensors' list of [name, shape]: {exc}") from exc
    if len({n for n, _ in tensors}) != len(tensors):
        raise ContractError("adapter metadata names a tensor twice")
    return w, tensors


def decode_state(arrays: Mapping[str, np.ndarray], meta: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """Torch tensors in the wire dtype, bit for bit what `encode_state` was given (after its cast)."""
    w, tensors = _layout(arrays, meta)
    arr = arrays[ADAPTER_ARRAY]
    numel = sum(math.prod(shape) for _, shape in tensors)
    if arr.dtype != _NUMPY[w] or arr.shape != (numel,):
        raise ContractError(
            f"adapter array: expected {_NUMPY[w]} of shape ({numel},) for wire dtype {w.value} and "
            f"{len(tensors)} tensors, got {arr.dtype} of shape {arr.shape}"
        )
    copy = np.array(arr, copy=True, order="C")  # writable and owned: torch must not alias the message buffer
    flat = torch.from_numpy(copy.view(np.int16)).view(torch.bfloat16) if w is WireDtype.BF16 else torch.from_numpy(copy)
    out, offset = {}, 0
    for name, shape in tensors:
        n = math.prod(shape)
        out[name] = flat[offset : offset + n].view(shape)
        offset += n
    return out


def state_nbytes(state: Mapping[str, torch.Tensor], wire: str | WireDtype) -> int:
    """The adapter's size in the wire dtype: what a reply's payload should be close to."""
    size = wire_dtype(wire).itemsize
    return sum(int(t.numel()) * size for t in state.values())


def serialized_nbytes(arrays: Mapping[str, np.ndarray]) -> int:
    """Bytes once each array is serialised as Flower's ArrayRecord does (np.save, no pickle)."""
    total = 0
    for arr in arrays.values():
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        total += buf.getbuffer().nbytes
    return total


def peft_config_dict(lora: LoraPlan, base_model_name_or_path: str) -> dict[str, Any]:
    """A standard peft LoraConfig for `lora` (same regex targets as training), as adapter_config.json holds it."""
    from peft import LoraConfig  # imported here: only writers of PEFT directories need peft

    config = LoraConfig(
        r=lora.rank,
        # mypy: peft types lora_alpha as int; it accepts a float (it only divides by it)
        lora_alpha=lora.alpha,  # type: ignore[arg-type]
        lora_dropout=lora.dropout,
        target_modules=lora.peft_target_regex(),
        bias="none",
        base_model_name_or_path=base_model_name_or_path,
    )
    return config.to_dict()


def write_peft_dir(
    state: Mapping[str, torch.Tensor],
    lora: LoraPlan,
    base_model_name_or_path: str,
    out_dir: Path,
    *,
    dtype: str | WireDtype | None = None,
) -> str:
    """Write adapter_config.json + adapter_model.safetensors (loadable by PeftModel.from_pretrained);
    returns the directory's sha256. Keys are peft's saved form (get_peft_model_state_dict)."""
    from safetensors.torch import save_file

    bad = [k for k in state if ".lora_A." not in k and ".lora_B." not in k]
    if bad:
        raise ProtocolError(f"not a LoRA adapter state: keys without lora_A/lora_B such as {bad[:3]}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cast = None if dtype is None else torch_dtype(dtype)
    tensors = {k: v.detach().to("cpu", cast or v.dtype).contiguous() for k, v in state.items()}
    config = peft_config_dict(lora, base_model_name_or_path)
    tmp_cfg, tmp_w = out_dir / (ADAPTER_CONFIG + ".tmp"), out_dir / (ADAPTER_WEIGHTS + ".tmp")
    tmp_cfg.write_text(json.dumps(config, indent=2, sort_keys=True, default=list) + "\n", encoding="utf-8")
    save_file(tensors, str(tmp_w), metadata={"format": "pt"})
    os.replace(tmp_cfg, out_dir / ADAPTER_CONFIG)  # a reader never sees half a directory's files
    os.replace(tmp_w, out_dir / ADAPTER_WEIGHTS)
    return adapter_sha256(out_dir)


def adapter_sha256(adapter_dir: Path) -> str:
    """sha256 over `name  sha256(file)` lines of the two PEFT files, like the model manifest hash."""
    adapter_dir = Path(adapter_dir)
    lines = []
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        path = adapter_dir / name
        if not path.is_file():
            raise ProtocolError(f"adapter directory {adapter_dir} has no {name}")
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(4 * 1024 * 1024):
                digest.update(chunk)
        lines.append(f"{name}  {digest.hexdigest()}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()
