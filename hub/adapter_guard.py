"""What the hub accepts from a trainer: an adapter of the round's layout, finite, within the update-norm bound."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from protocols.errors import ContractError
from protocols.finetune import LoraPlan

_LORA_KEY = re.compile(r"(?P<prefix>.+)\.(?P<module>[A-Za-z_][A-Za-z0-9_]*)\.lora_(?P<ab>[AB])\.weight")


@dataclass(frozen=True)
class AdapterGuard:
    """Checks one site's adapter against the protocol's LoRA settings and the round's global adapter.

    `reference` is the global adapter the round started from (None in round 1, where PEFT starts every
    lora_B at zero: the update norm is then measured on the lora_B tensors alone).
    """

    lora: LoraPlan
    reference: Mapping[str, torch.Tensor] | None = None
    max_update_norm: float | None = None

    def check(self, state: Mapping[str, torch.Tensor], site: str) -> None:
        self._check_lora(state, site)
        if self.reference is not None:
            want = {k: tuple(v.shape) for k, v in self.reference.items()}
            got = {k: tuple(v.shape) for k, v in state.items()}
            if got != want:
                diff = sorted(set(got.items()) ^ set(want.items()))[:3]
                raise ContractError(
                    f"site {site}: adapter layout differs from the round's global adapter (e.g. {diff})"
                )
        for name, tensor in state.items():
            if not bool(torch.isfinite(tensor).all()):
                raise ContractError(f"site {site}: adapter tensor {name!r} holds NaN or infinite values")
        if self.max_update_norm is not None:
            norm = self.update_norm(state)
            if not norm <= self.max_update_norm:
                raise ContractError(
                    f"site {site}: update norm {norm:.4g} exceeds the protocol's bound {self.max_update_norm:.4g}"
                )

    def update_norm(self, state: Mapping[str, torch.Tensor]) -> float:
        """L2 norm of (adapter - global adapter) over all tensors, in float64."""
        total = 0.0
        for name, tensor in state.items():
            if self.reference is not None:
                delta = tensor.double() - self.reference[name].double()
            elif name.endswith(".lora_B.weight"):
                delta = tensor.double()
            else:
                continue
            total += float(delta.square().sum())
        return math.sqrt(total)

    def _check_lora(self, state: Mapping[str, torch.Tensor], site: str) -> None:
        """Only lora_A/lora_B pairs of the protocol's target modules, with the protocol's rank."""
        if not state:
            raise ContractError(f"site {site}: adapter holds no tensors")
        pairs: dict[str, dict[str, tuple[int, ...]]] = {}
        for name, tensor in state.items():
            match = _LORA_KEY.fullmatch(name)
            if match is None or match["module"] not in self.lora.target_modules:
                raise ContractError(
                    f"site {site}: tensor {name[:120]!r} is not a LoRA weight of the target modules "
                    f"{list(self.lora.target_modules)}"
                )
            pairs.setdefault(f"{match['prefix']}.{match['module']}", {})[match["ab"]] = tuple(tensor.shape)
        r = self.lora.rank
        for module, shapes in pairs.items():
            a, b = shapes.get("A"), shapes.get("B")
            if a is None or b is None or len(a) != 2 or len(b) != 2 or a[0] != r or b[1] != r:
                raise ContractError(
                    f"site {site}: {module[:120]} needs lora_A of shape ({r}, in) and lora_B of shape (out, {r}), "
                    f"got A {a} and B {b}"
                )


def capped_weights(weights: Mapping[str, float], max_share: float) -> dict[str, float]:
    """FedAvg weights with no site above `max_share` of the total (water-filling; equal when that is impossible)."""
    if not 0 < max_share <= 1:
        raise ValueError(f"max_share must be in (0, 1], got {max_share!r}")
    n = len(weights)
    if n == 0 or max_share >= 1:
        return dict(weights)
    if n * max_share <= 1:
        return {site: 1.0 for site in weights}
    capped: set[str] = set()
    while True:
        free = sum(w for s, w in weights.items() if s not in capped)
        level = max_share * free / (1 - len(capped) * max_share)
        over = {s for s, w in weights.items() if s not in capped and w > level}
        if not over:
            return {s: (level if s in capped else float(w)) for s, w in weights.items()}
        capped |= over
