"""Fine-tuning plan of a study round: who trains, how long, LoRA and optimiser settings, wire dtype, DP."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

from protocols.errors import ProtocolError
from protocols.grpo import FinetuneMethod, GrpoPlan, parse_grpo
from protocols.mapping import E, check_mapping, enum_value, integer, number

_SITE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The language model's attention and MLP projections; the vision tower also has gate/up/down_proj,
# which LoRA must not touch by default (see LoraPlan.peft_target_regex).
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class OptimizerKind(str, Enum):
    ADAMW = "adamw"
    SGD = "sgd"


class WireDtype(str, Enum):
    """The dtype adapter tensors travel in (hub and sites both decode it bit for bit)."""

    BF16 = "bf16"
    FP16 = "fp16"
    FP32 = "fp32"

    @property
    def itemsize(self) -> int:
        return 4 if self is WireDtype.FP32 else 2


class DpMode(str, Enum):
    """Opacus' per-sample gradient modes that work on LoRA parameters of a VLM."""

    HOOKS = "hooks"
    GHOST = "ghost"


def _number(value: Any, name: str) -> float:
    return number(value, name, error=ProtocolError)


def _integer(value: Any, name: str, low: int, high: int) -> int:
    return integer(value, name, low, high, error=ProtocolError)


def _enum(kind: type[E], value: Any, name: str) -> E:
    return enum_value(kind, value, name, error=ProtocolError)


@dataclass(frozen=True)
class LoraPlan:
    """LoRA settings; `target_modules` are projection names inside the language model's layers."""

    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES

    def __post_init__(self) -> None:
        _integer(self.rank, "finetune.lora.rank", 1, 1024)
        if not _number(self.alpha, "finetune.lora.alpha") > 0:
            raise ProtocolError(f"finetune.lora.alpha must be > 0, got {self.alpha!r}")
        if not 0.0 <= _number(self.dropout, "finetune.lora.dropout") < 1.0:
            raise ProtocolError(f"finetune.lora.dropout must be in [0, 1), got {self.dropout!r}")
        mods = self.target_modules
        if (
            not isinstance(mods, tuple)
            or not mods
            or len(set(mods)) != len(mods)
            or not all(isinstance(m, str) and _MODULE.fullmatch(m) for m in mods)
        ):
            raise ProtocolError(
                f"finetune.lora.target_modules must be a non-empty list of unique module names "
                f"such as {list(DEFAULT_TARGET_MODULES)}, got {mods!r}"
            )

    def peft_target_regex(self) -> str:
        """A peft `target_modules` regex matching only the language model's layers, never the vision tower."""
        names = "|".join(self.target_modules)
        return rf".*language_model\.layers\.\d+\.(?:self_attn|mlp)\.(?:{names})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "alpha": float(self.alpha),
            "dropout": float(self.dropout),
            "target_modules": list(self.target_modules),
        }


@dataclass(frozen=True)
class DpPlan:
    """DP-SGD settings; the privacy unit is one video. Without noise_multiplier, each site computes the
    smallest one that keeps all planned rounds within target_epsilon at its own sample rate."""

    target_epsilon: float
    delta: float
    max_grad_norm: float = 1.0
    noise_multiplier: float | None = None
    mode: DpMode = DpMode.GHOST
    # A fixed Poisson rate makes sigma, steps and the reported epsilon independent of a site's private
    # number of videos; without it the rate is batch_size / n, and n is public (README: Site policy).
    sample_rate: float | None = None

    def __post_init__(self) -> None:
        if not 0 < _number(self.target_epsilon, "finetune.dp.target_epsilon") <= 100:
            raise ProtocolError(f"finetune.dp.target_epsilon must be in (0, 100], got {self.target_epsilon!r}")
        if not 0 < _number(self.delta, "finetune.dp.delta") < 1e-2:
            raise ProtocolError(f"finetune.dp.delta must be in (0, 0.01), got {self.delta!r}")
        if not _number(self.max_grad_norm, "finetune.dp.max_grad_norm") > 0:
            raise ProtocolError(f"finetune.dp.max_grad_norm must be > 0, got {self.max_grad_norm!r}")
        sigma = self.noise_multiplier
        if sigma is not None and not 0 < _number(sigma, "finetune.dp.noise_multiplier") <= 100:
            raise ProtocolError(f"finetune.dp.noise_multiplier must be in (0, 100] or absent, got {sigma!r}")
        if not isinstance(self.mode, DpMode):
            raise ProtocolError(f"finetune.dp.mode must be a DpMode, got {self.mode!r}")
        rate = self.sample_rate
        if rate is not None and not 0 < _number(rate, "finetune.dp.sample_rate") <= 1:
            raise ProtocolError(f"finetune.dp.sample_rate must be in (0, 1] or absent, got {rate!r}")

    def check_delta(self, n_units: int) -> None:
        """Refuse a delta above 1/(10 n): with n units a larger delta lets a mechanism expose one unit outright."""
        if n_units < 1 or self.delta > 1.0 / (10 * n_units):
            raise ProtocolError(
                f"finetune.dp.delta {self.delta:g} is above 1/(10 n) = {1.0 / (10 * max(n_units, 1)):g} "
                f"for the {n_units} training units here; ask for a smaller delta"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "target_epsilon": float(self.target_epsilon),
            "delta": float(self.delta),
            "max_grad_norm": float(self.max_grad_norm),
            "noise_multiplier": None if self.noise_multiplier is None else float(self.noise_multiplier),
            "mode": self.mode.value,
            # only when set, so that the hash of a protocol without it is unchanged
            **({} if self.sample_rate is None else {"sample_rate": float(self.sample_rate)}),
        }


@dataclass(frozen=True)
class FinetunePlan:
    """What every training site does in each round; sites of the study not in `trainers` only evaluate."""

    trainers: tuple[str, ...]
    local_steps: int | None = None
    epochs: float | None = None
    batch_size: int = 4
    sample_every_s: float = 1.0  # which labelled frames become training examples
    lora: LoraPlan = field(default_factory=LoraPlan)
    optimizer: OptimizerKind = OptimizerKind.ADAMW
    lr: float = 1e-4
    wire_dtype: WireDtype = WireDtype.BF16
    augment: bool = True
    init_seed: int = 0  # the same initial adapter at every site, on any device
    dp: DpPlan | None = None
    # What the hub accepts from trainers: no site above this share of the FedAvg weight, and (when set)
    # no update whose L2 norm from the round's global adapter exceeds the bound.
    max_site_share: float = 0.5
    max_update_norm: float | None = None
    method: FinetuneMethod = FinetuneMethod.SFT
    grpo: GrpoPlan | None = None  # GRPO's own steps, lr and frames per step (method grpo only)

    def __post_init__(self) -> None:
        self._check_method()
        if not 0 < _number(self.max_site_share, "finetune.max_site_share") <= 1:
            raise ProtocolError(f"finetune.max_site_share must be in (0, 1], got {self.max_site_share!r}")
        bound = self.max_update_norm
        if bound is not None and not 0 < _number(bound, "finetune.max_update_norm") < float("inf"):
            raise ProtocolError(f"finetune.max_update_norm must be a positive number, got {bound!r}")
        t = self.trainers
        if (
            not isinstance(t, tuple)
            or not t
            or len(set(t)) != len(t)
            or not all(isinstance(s, str) and _SITE.fullmatch(s) for s in t)
        ):
            raise ProtocolError(f"finetune.trainers must be a non-empty list of unique site names, got {t!r}")
        if self.method is FinetuneMethod.SFT and (self.local_steps is None) == (self.epochs is None):
            raise ProtocolError(
                f"finetune needs exactly one of local_steps or epochs, got "
                f"local_steps={self.local_steps!r}, epochs={self.epochs!r}"
            )
        if self.local_steps is not None:
            _integer(self.local_steps, "finetune.local_steps", 1, 1_000_000)
        if self.epochs is not None and not 0 < _number(self.epochs, "finetune.epochs") <= 1000:
            raise ProtocolError(f"finetune.epochs must be in (0, 1000], got {self.epochs!r}")
        _integer(self.batch_size, "finetune.batch_size", 1, 4096)
        if not 0 < _number(self.sample_every_s, "finetune.sample_every_s") <= 3600:
            raise ProtocolError(f"finetune.sample_every_s must be in (0, 3600], got {self.sample_every_s!r}")
        if not 0 < _number(self.lr, "finetune.lr") < 1:
            raise ProtocolError(f"finetune.lr must be in (0, 1), got {self.lr!r}")
        if not isinstance(self.augment, bool):
            raise ProtocolError(f"finetune.augment must be true or false, got {self.augment!r}")
        _integer(self.init_seed, "finetune.init_seed", 0, 2**63 - 1)
        for name, kind in (("lora", LoraPlan), ("optimizer", OptimizerKind), ("wire_dtype", WireDtype)):
            if not isinstance(getattr(self, name), kind):
                raise ProtocolError(f"finetune.{name} must be a {kind.__name__}, got {getattr(self, name)!r}")
        if self.dp is not None and not isinstance(self.dp, DpPlan):
            raise ProtocolError(f"finetune.dp must be a DpPlan or absent, got {self.dp!r}")

    def _check_method(self) -> None:
        if not isinstance(self.method, FinetuneMethod):
            raise ProtocolError(f"finetune.method must be a FinetuneMethod, got {self.method!r}")
        if self.grpo is not None and not isinstance(self.grpo, GrpoPlan):
            raise ProtocolError(f"finetune.grpo must be a GrpoPlan or absent, got {self.grpo!r}")
        if (self.method is FinetuneMethod.GRPO) != (self.grpo is not None):
            raise ProtocolError(
                f"finetune.method {self.method.value!r} and finetune.grpo "
                f"({'set' if self.grpo else 'absent'}) disagree: the grpo block is required with method grpo only"
            )
        if self.grpo is not None and (self.local_steps is not None or self.epochs is not None):
            raise ProtocolError(
                f"finetune.local_steps/epochs ({self.local_steps!r}/{self.epochs!r}) are SFT settings; "
                "with method grpo set finetune.grpo.local_steps"
            )

    def step_plan(self) -> tuple[int | None, float | None, int]:
        """(local steps, epochs, units per step) of this method: what the DP schedule and FedAvg weight use."""
        if self.grpo is not None:
            return self.grpo.local_steps, None, self.grpo.frames_per_step
        return self.local_steps, self.epochs, self.batch_size

    def check_sites(self, sites: tuple[str, ...] | list[str], source: str = "<protocol>") -> None:
        """Every trainer must be a site of the study."""
        unknown = [s for s in self.trainers if s not in sites]
        if unknown:
            raise ProtocolError(f"{source}: finetune.trainers {unknown} are not among the study's sites {list(sites)}")

    def evaluators_only(self, sites: tuple[str, ...] | list[str]) -> tuple[str, ...]:
        """The study's sites that never train (held-out centers)."""
        return tuple(s for s in sites if s not in self.trainers)

    def to_dict(self) -> dict[str, Any]:
        """Canonical, JSON-ready form (hashed into the protocol); GRPO's leaves out the SFT settings it does not use."""
        out = self._to_dict()
        return out if self.grpo is None else {k: v for k, v in out.items() if k not in _SFT_ONLY}

    def _to_dict(self) -> dict[str, Any]:
        return {
            "trainers": list(self.trainers),
            "local_steps": self.local_steps,
            "epochs": None if self.epochs is None else float(self.epochs),
            "batch_size": self.batch_size,
            "sample_every_s": float(self.sample_every_s),
            "lora": self.lora.to_dict(),
            "optimizer": self.optimizer.value,
            "lr": float(self.lr),
            "wire_dtype": self.wire_dtype.value,
            "augment": self.augment,
            "init_seed": self.init_seed,
            "dp": None if self.dp is None else self.dp.to_dict(),
            # Only when set away from the defaults, so that protocols written before these keys keep their hash.
            **({"max_site_share": float(self.max_site_share)} if self.max_site_share != 0.5 else {}),
            **({"max_update_norm": float(self.max_update_norm)} if self.max_update_norm is not None else {}),
            # Only for GRPO, so that SFT protocols keep their hash.
            **({"method": self.method.value, "grpo": self.grpo.to_dict()} if self.grpo is not None else {}),
        }


# What GRPO sets in its own block (finetune.grpo) or does not use (augmentation of supervised targets).
_SFT_ONLY = frozenset({"local_steps", "epochs", "batch_size", "lr", "augment"})


def _names(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise ProtocolError(f"{where} must be a list, got {type(value).__name__} ({value!r})")
    return tuple(value)


def _parse_lora(data: Any, source: str) -> LoraPlan:
    raw = dict(check_mapping(data, f"{source}: finetune.lora", {f.name for f in fields(LoraPlan)}, ProtocolError))
    if "target_modules" in raw:
        raw["target_modules"] = _names(raw["target_modules"], f"{source}: finetune.lora.target_modules")
    return LoraPlan(**raw)


def _parse_dp(data: Any, source: str) -> DpPlan:
    raw = dict(check_mapping(data, f"{source}: finetune.dp", {f.name for f in fields(DpPlan)}, ProtocolError))
    missing = [k for k in ("target_epsilon", "delta") if k not in raw]
    if missing:
        raise ProtocolError(f"{source}: finetune.dp is missing {missing}")
    if "mode" in raw:
        raw["mode"] = _enum(DpMode, raw["mode"], "finetune.dp.mode")
    return DpPlan(**raw)


def parse_finetune(data: Any, source: str = "<protocol>") -> FinetunePlan:
    """Validate a round plan's `finetune` mapping; every error names `source` and the value received."""
    raw = dict(check_mapping(data, f"{source}: finetune", {f.name for f in fields(FinetunePlan)}, ProtocolError))
    if "trainers" not in raw:
        raise ProtocolError(f"{source}: finetune.trainers is required (the sites that train)")
    raw["trainers"] = _names(raw["trainers"], f"{source}: finetune.trainers")
    method = _enum(FinetuneMethod, raw.get("method", "sft"), f"{source}: finetune.method")
    if method is FinetuneMethod.GRPO:
        sft_only = sorted(set(raw) & _SFT_ONLY)
        if sft_only:
            raise ProtocolError(f"{source}: finetune {sft_only} are SFT settings; GRPO takes them from finetune.grpo")
    elif "local_steps" not in raw and "epochs" not in raw:
        raise ProtocolError(f"{source}: finetune needs local_steps or epochs")
    raw["method"] = method
    try:
        if "grpo" in raw:
            raw["grpo"] = parse_grpo(raw["grpo"], source)
        if "lora" in raw:
            raw["lora"] = _parse_lora(raw["lora"], source)
        if raw.get("dp") is not None:
            raw["dp"] = _parse_dp(raw["dp"], source)
        if "optimizer" in raw:
            raw["optimizer"] = _enum(OptimizerKind, raw["optimizer"], "finetune.optimizer")
        if "wire_dtype" in raw:
            raw["wire_dtype"] = _enum(WireDtype, raw["wire_dtype"], "finetune.wire_dtype")
        return FinetunePlan(**raw)
    except ProtocolError as exc:
        if str(exc).startswith(source):
            raise
        raise ProtocolError(f"{source}: {exc}") from exc
