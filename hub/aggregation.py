"""Streaming FedAvg of LoRA adapters (one reply plus one running sum in memory) and their storage."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hub.adapter_guard import AdapterGuard, capped_weights
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
    """Weighted mean of adapters, checked one reply at a time and folded when the round's replies are in.

    Each checked reply is spooled to disk (the weight cap needs every site's weight before any is folded);
    only the running sum (float64 by default, so the order of replies does not change the result beyond
    rounding to the wire dtype) and the reply being added are ever in memory.
    """

    def __init__(self, accumulate: str = "float64", guard: AdapterGuard | None = None, max_share: float = 1.0) -> None:
        if accumulate not in _ACCUMULATE:
            raise ValueError(f"accumulate must be one of {sorted(_ACCUMULATE)}, got {accumulate!r}")
        self._dtype = _ACCUMULATE[accumulate]
        self._guard, self._max_share = guard, max_share
        self._spool = tempfile.TemporaryDirectory(prefix="fedavg-")
        self._spooled: list[tuple[str, Path, int]] = []
        self._shapes: dict[str, tuple[int, ...]] | None = None
        self.num_examples = 0
        self.sites: list[str] = []

    def add(
        self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, str], num_examples: int, site: str = "?"
    ) -> None:
        """Check one site's encoded adapter and keep it for the fold; a refused one raises ContractError."""
        if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
            raise ContractError(f"site {site}: num-examples must be a positive integer, got {num_examples!r}")
        state = decode_state(arrays, meta)
        if self._guard is not None:
            self._guard.check(state, site)
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        if self._shapes is None:
            self._shapes = shapes
        elif shapes != self._shapes:
            diff = sorted(set(shapes.items()) ^ set(self._shapes.items()))[:3]
            raise ContractError(f"site {site}: adapter tensors differ from the first reply's (e.g. {diff})")
        path = Path(self._spool.name) / f"{len(self._spooled)}.pt"
        torch.save(dict(state), path)
        del state  # the decoded reply goes before the next one arrives
        self._spooled.append((site, path, num_examples))
        self.num_examples += num_examples
        self.sites.append(site)

    def weights(self) -> list[float]:
        """Each added reply's FedAvg weight after the cap (no site above `max_share` of the total), in order."""
        capped = capped_weights({str(i): float(n) for i, (_, _, n) in enumerate(self._spooled)}, self._max_share)
        return [capped[str(i)] for i in range(len(self._spooled))]

    def result(self, wire: str | WireDtype = WireDtype.BF16) -> dict[str, torch.Tensor]:
        """The weighted mean, rounded once to the wire dtype."""
        if not self._spooled or self._shapes is None:
            raise ContractError("no adapter was added: FedAvg of nothing")
        weights = self.weights()
        total: dict[str, torch.Tensor] = {k: torch.zeros(s, dtype=self._dtype) for k, s in self._shapes.items()}
        for (_, path, _), weight in zip(self._spooled, weights, strict=True):
            state = torch.load(path, weights_only=True)
            for k, tensor in state.items():
                total[k].add_(tensor.to(self._dtype), alpha=weight)
            del state
        out_dtype = torch_dtype(wire)
        denominator = sum(weights)
        return {k: (s / denominator).to(out_dtype) for k, s in total.items()}

    def close(self) -> None:
        self._spool.cleanup()


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
