"""Streaming FedAvg of LoRA adapters (one reply plus one running sum in memory) and their storage."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from protocols.adapters import decode_state, torch_dtype, write_peft_dir
from protocols.errors import ContractError
from protocols.finetune import LoraPlan, WireDtype

_ACCUMULATE = {"float64": torch.float64, "float32": torch.float32}


@dataclass(frozen=True)
class StoredAdapter:
    """A round's global adapter as written: a PEFT directory and its sha256."""

    path: Path
    sha256: str
    num_examples: int
    sites: tuple[str, ...]


class StreamingFedAvg:
    """Example-weighted mean of adapters, added one reply at a time.

    Only the running sum (float64 by default, so the order of replies does not change the result
    beyond rounding to the wire dtype) and the reply being added are ever in memory.
    """

    def __init__(self, accumulate: str = "float64") -> None:
        if accumulate not in _ACCUMULATE:
            raise ValueError(f"accumulate must be one of {sorted(_ACCUMULATE)}, got {accumulate!r}")
        self._dtype = _ACCUMULATE[accumulate]
        self._sum: dict[str, torch.Tensor] | None = None
        self._shapes: dict[str, tuple[int, ...]] = {}
        self.num_examples = 0
        self.sites: list[str] = []

    def add(
        self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, str], num_examples: int, site: str = "?"
    ) -> None:
        """Fold one site's encoded adapter into the sum; refuses one whose tensors differ from the first."""
        if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
            raise ContractError(f"site {site}: num-examples must be a positive integer, got {num_examples!r}")
        state = decode_state(arrays, meta)
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        if self._sum is None:
            self._shapes = shapes
            self._sum = {k: torch.zeros(s, dtype=self._dtype) for k, s in shapes.items()}
        elif shapes != self._shapes:
            diff = sorted(set(shapes.items()) ^ set(self._shapes.items()))[:3]
            raise ContractError(f"site {site}: adapter tensors differ from the first reply's (e.g. {diff})")
        for k, tensor in state.items():
            self._sum[k].add_(tensor.to(self._dtype), alpha=float(num_examples))
        del state  # the decoded reply goes before the next one arrives
        self.num_examples += num_examples
        self.sites.append(site)

    def result(self, wire: str | WireDtype = WireDtype.BF16) -> dict[str, torch.Tensor]:
        """The weighted mean, rounded once to the wire dtype."""
        if self._sum is None:
            raise ContractError("no adapter was added: FedAvg of nothing")
        out_dtype = torch_dtype(wire)
        total = float(self.num_examples)
        return {k: (s / total).to(out_dtype) for k, s in self._sum.items()}


def write_peft_adapter(
    state: Mapping[str, torch.Tensor],
    lora: LoraPlan,
    base_model_name_or_path: str,
    out_dir: Path,
    *,
    num_examples: int = 0,
    sites: tuple[str, ...] = (),
) -> StoredAdapter:
    """Store a round's global adapter as a standard PEFT directory; returns where it is and its sha256."""
    sha = write_peft_dir(state, lora, base_model_name_or_path, Path(out_dir))
    return StoredAdapter(Path(out_dir), sha, num_examples, tuple(sites))
