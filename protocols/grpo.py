"""GRPO settings of a fine-tuning round: group size, steps, clipping, KL to the incoming adapter, sampling, rewards."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

from protocols.errors import ProtocolError
from protocols.mapping import check_mapping, enum_value, integer, number


class FinetuneMethod(str, Enum):
    """How a fine-tuning round learns: supervised targets written from labels, or rewards checked against them."""

    SFT = "sft"
    GRPO = "grpo"


class RewardKind(str, Enum):
    """The reward components a site computes from its own labels (site_node/training/rewards.py implements each).
    A task definition names the one that checks its answers (`reward:`); `format` and `grounding` apply to all."""

    FORMAT = "format"  # all three levels and the answer present and readable
    PHASE = "phase"  # the answer names the labelled phase
    TRIPLET = "triplet"  # F1 of the stated triplets against the frame's triplets
    CVS = "cvs"  # per-criterion accuracy of the critical-view-of-safety judgement
    LOCALIZATION = "localization"  # mean IoU of the matched boxes, unmatched boxes count 0 (as the metric)
    GROUNDING = "grounding"  # L1 instrument F1 against the frame's instrument labels


DEFAULT_REWARD_WEIGHTS = {RewardKind.FORMAT: 0.2, RewardKind.PHASE: 1.0, RewardKind.GROUNDING: 0.1}


def _number(value: Any, name: str, low: float | None = None, high: float | None = None) -> float:
    return number(value, name, low, high, error=ProtocolError)


@dataclass(frozen=True)
class GrpoPlan:
    """One site's GRPO round: K local steps; each samples frames (DP: Poisson over videos, one frame each), draws
    G completions per frame from the current adapter and takes one clipped policy-gradient step with
    token-level normalisation (DAPO) plus beta times the k3 KL estimate to the round's incoming global adapter."""

    group_size: int = 4
    local_steps: int = 8
    lr: float = 1e-4
    clip_epsilon: float = 0.2
    beta: float = 0.04
    temperature: float = 1.0
    top_p: float = 1.0
    max_completion_tokens: int = 48
    frames_per_step: int = 4  # without DP: frames per step; with DP: the expected Poisson batch of videos
    reward_weights: dict[RewardKind, float] = field(default_factory=lambda: dict(DEFAULT_REWARD_WEIGHTS))

    def __post_init__(self) -> None:
        integer(self.group_size, "finetune.grpo.group_size", 2, 64, error=ProtocolError)
        integer(self.local_steps, "finetune.grpo.local_steps", 1, 100_000, error=ProtocolError)
        if not 0 < _number(self.lr, "finetune.grpo.lr") < 1:
            raise ProtocolError(f"finetune.grpo.lr must be in (0, 1), got {self.lr!r}")
        if not 0 < _number(self.clip_epsilon, "finetune.grpo.clip_epsilon") < 1:
            raise ProtocolError(f"finetune.grpo.clip_epsilon must be in (0, 1), got {self.clip_epsilon!r}")
        _number(self.beta, "finetune.grpo.beta", 0.0, 10.0)
        if not 0 < _number(self.temperature, "finetune.grpo.temperature") <= 5:
            raise ProtocolError(f"finetune.grpo.temperature must be in (0, 5], got {self.temperature!r}")
        if not 0 < _number(self.top_p, "finetune.grpo.top_p") <= 1:
            raise ProtocolError(f"finetune.grpo.top_p must be in (0, 1], got {self.top_p!r}")
        integer(self.max_completion_tokens, "finetune.grpo.max_completion_tokens", 1, 8192, error=ProtocolError)
        integer(self.frames_per_step, "finetune.grpo.frames_per_step", 1, 4096, error=ProtocolError)
        weights = self.reward_weights
        if not isinstance(weights, dict) or not weights or not all(isinstance(k, RewardKind) for k in weights):
            raise ProtocolError(f"finetune.grpo.reward_weights must map reward names to weights, got {weights!r}")
        for kind, weight in weights.items():
            _number(weight, f"finetune.grpo.reward_weights.{kind.value}", 0.0, 100.0)
        if not any(w > 0 for w in weights.values()):
            raise ProtocolError(f"finetune.grpo.reward_weights needs a positive weight, got {self.weights_dict()}")

    def weights_dict(self) -> dict[str, float]:
        return {k.value: float(v) for k, v in sorted(self.reward_weights.items(), key=lambda kv: kv[0].value)}

    def to_dict(self) -> dict[str, Any]:
        """Canonical, JSON-ready form (hashed into the protocol)."""
        return {
            "group_size": self.group_size,
            "local_steps": self.local_steps,
            "lr": float(self.lr),
            "clip_epsilon": float(self.clip_epsilon),
            "beta": float(self.beta),
            "temperature": float(self.temperature),
            "top_p": float(self.top_p),
            "max_completion_tokens": self.max_completion_tokens,
            "frames_per_step": self.frames_per_step,
            "reward_weights": self.weights_dict(),
        }


def parse_grpo(data: Any, source: str) -> GrpoPlan:
    """Validate a `finetune.grpo` mapping; reward weights are keyed by RewardKind names."""
    raw = dict(check_mapping(data, f"{source}: finetune.grpo", {f.name for f in fields(GrpoPlan)}, ProtocolError))
    if "reward_weights" in raw:
        weights = check_mapping(
            raw["reward_weights"],
            f"{source}: finetune.grpo.reward_weights",
            {k.value for k in RewardKind},
            ProtocolError,
        )
        raw["reward_weights"] = {
            enum_value(RewardKind, k, "finetune.grpo.reward_weights", error=ProtocolError): v
            for k, v in weights.items()
        }
    return GrpoPlan(**raw)
