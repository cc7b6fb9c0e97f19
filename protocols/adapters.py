"""LoRA adapter tensors on the wire (numpy arrays + string metadata, bit exact) and as a PEFT directory."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from protocols.errors import ContractError, ProtocolError
from protocols.finetune import LoraPlan, WireDtype

ENCODING_VERSION = "surgfed-adapter/1"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_TORCH = {WireDtype.BF16: torch.bfloat16, WireDtype.FP16: torch.float16, WireDtype.FP32: torch.float32}
# numpy has no bfloat16: its raw bits travel as uint16 and are reinterpreted on arrival.
_NUMPY = {WireDtype.BF16: np.dtype(np.uint16), WireDtype.FP16: np.dtype(np.float16), WireDtype.FP32: np.dtype(np.float32)}


def wire_dtype(value: str | WireDtype) -> WireDtype:
    try:
        return WireDtype(value)
    except ValueError:
        raise ContractError(f"wire dtype must be one of {[w.value for w in WireDtype]}, got {value!r}") from None


def torch_dtype(value: str | WireDtype) -> torch.dtype:
    return _TORCH[wire_dtype(value)]


def _to_wire(tensor: torch.Tensor, wire: WireDtype) -> np.ndarray:
    t = tensor.detach().to("cpu", _TORCH[wire]).contiguous()
    if wire is WireDtype.BF16:
        return t.view(torch.int16).numpy().view(np.uint16)  # same 16 bits, a dtype numpy knows
    return t.numpy()


def encode_state(state: Mapping[str, torch.Tensor], wire: str | WireDtype) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Arrays (bf16 as raw uint16 bits) and metadata naming the wire dtype and every tensor's shape."""
    w = wire_dtype(wire)
    if not state:
        raise ContractError("cannot encode an empty adapter state")
    arrays: dict[str, np.ndarray] = {}
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            raise ContractError(f"adapter tensor {name!r} must be a floating-point torch.Tensor, got {tensor!r:.80}")
        arrays[name] = _to_wire(tensor, w)
    shapes = {name: list(a.shape) for name, a in arrays.items()}
    meta = {"encoding": ENCODING_VERSION, "wire-dtype": w.value, "shapes": json.dumps(shapes, sort_keys=True)}
    return arrays, meta


def _check_meta(arrays: Mapping[str, np.ndarray], meta: Mapping[str, str]) -> tuple[WireDtype, dict[str, list[int]]]:
    if meta.get("encoding") != ENCODING_VERSION:
        raise ContractError(f"adapter encoding must be {ENCODING_VERSION!r}, got {meta.get('encoding')!r}")
    w = wire_dtype(str(meta.get("wire-dtype")))
    try:
        shapes = json.loads(str(meta["shapes"]))
    except (KeyError, ValueError) as exc:
        raise ContractError(f"adapter metadata needs a JSON 'shapes' mapping: {exc}") from exc
    if set(shapes) != set(arrays):
        extra, missing = sorted(set(arrays) - set(shapes)), sorted(set(shapes) - set(arrays))
        raise ContractError(f"adapter arrays do not match their metadata: unexpected {extra[:3]}, missing {missing[:3]}")
    return w, shapes


def decode_state(arrays: Mapping[str, np.ndarray], meta: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """Torch tensors in the wire dtype, bit for bit what `encode_state` was given (after its cast)."""
    w, shapes = _check_meta(arrays, meta)
    out: dict[str, torch.Tensor] = {}
    for name, arr in arrays.items():
        if arr.dtype != _NUMPY[w] or list(arr.shape) != shapes[name]:
            raise ContractError(f"adapter tensor {name!r}: expected {_NUMPY[w]} {shapes[name]} for wire dtype "
                                f"{w.value}, got {arr.dtype} {list(arr.shape)}")
        copy = np.array(arr, copy=True, order="C")  # writable and owned: torch must not alias the message buffer
        if w is WireDtype.BF16:
            out[name] = torch.from_numpy(copy.view(np.int16)).view(torch.bfloat16)
        else:
            out[name] = torch.from_numpy(copy)
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

    config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=lora.peft_target_regex(), bias="none",
                        base_model_name_or_path=base_model_name_or_path)
    return config.to_dict()


def write_peft_dir(state: Mapping[str, torch.Tensor], lora: LoraPlan, base_model_name_or_path: str,
                   out_dir: Path, *, dtype: str | WireDtype | None = None) -> str:
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
