"""DP-SGD for LoRA with opacus: per-unit Poisson sampling and clipping, noise, the RDP accountant."""

from __future__ import annotations

import math
import secrets
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from opacus.grad_sample import GradSampleModule, GradSampleModuleFastGradientClipping
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping

from protocols.errors import ConfigError, SurgFedError
from protocols.finetune import DpMode, DpPlan

# One surgery: videos sharing a case key (two copies of one source) are one unit. A sampled unit
# contributes one clipped per-sample gradient per step.
PRIVACY_UNIT = "video"
# Opacus' default RDP orders plus larger ones: with little noise the best order lies past 63, and the
# defaults would then report a looser (still valid) epsilon.
RDP_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [80, 96, 128, 192, 256, 384, 512]


class PrivacyBudgetExceeded(SurgFedError):
    """A round would take an epsilon past the site's budget or cap; refused before any training."""


@dataclass(frozen=True)
class DpSchedule:
    """One round's DP-SGD parameters at this site: what the ledger records and the accountant composes."""

    noise_multiplier: float
    sample_rate: float
    steps: int
    n_units: int  # videos

    @property
    def expected_batch_size(self) -> float:
        return self.sample_rate * self.n_units


def dp_schedule(
    dp: DpPlan, *, n_videos: int, batch_size: int, local_steps: int | None, epochs: float | None, total_rounds: int
) -> DpSchedule:
    """Poisson rate over videos, steps per round, and sigma (the plan's, or the smallest that keeps
    `total_rounds` such rounds within target_epsilon at this site's rate)."""
    if n_videos < 1:
        raise ConfigError(f"DP training needs at least one video, got {n_videos}")
    if total_rounds < 1:
        raise ConfigError(f"total_rounds must be >= 1, got {total_rounds}")
    # A protocol-fixed rate keeps sigma, steps and the reported epsilon independent of the private n.
    q = dp.sample_rate if dp.sample_rate is not None else min(1.0, batch_size / n_videos)
    steps = local_steps if local_steps is not None else max(1, math.ceil(float(epochs or 0) / q))
    sigma = dp.noise_multiplier
    if sigma is None:
        with warnings.catch_warnings():  # the bisection probes tiny sigmas, where opacus warns about its orders
            warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
            sigma = get_noise_multiplier(
                target_epsilon=dp.target_epsilon,
                target_delta=dp.delta,
                sample_rate=q,
                steps=steps * total_rounds,
                accountant="rdp",
            )
    return DpSchedule(float(sigma), q, int(steps), n_videos)


def rdp_epsilon(history: Sequence[tuple[float, float, int]], delta: float) -> float:
    """Epsilon of composed (noise multiplier, sample rate, steps) mechanisms by opacus' RDP accountant."""
    if not history:
        return 0.0
    accountant = RDPAccountant()
    accountant.history = [(float(s), float(q), int(n)) for s, q, n in history]
    return float(accountant.get_epsilon(delta=delta, alphas=RDP_ORDERS))


def poisson_video_batches(
    by_video: dict[str, list[int]], sample_rate: float, steps: int, rng: np.random.Generator
) -> list[list[int]]:
    """Each step samples every video independently with `sample_rate`; a sampled video gives ONE random
    frame, so a per-sample gradient is a per-video gradient and clipping bounds each video's influence."""
    videos = sorted(by_video)
    batches = []
    for _ in range(steps):
        chosen = [v for v in videos if rng.random() < sample_rate]
        batches.append([by_video[v][int(rng.integers(len(by_video[v])))] for v in chosen])
    return batches


def private_rng() -> np.random.Generator:
    """Sampling randomness from local entropy: the hub sends the job seed, and subsampling only
    amplifies privacy if the hub cannot know which videos were drawn."""
    return np.random.default_rng(secrets.randbits(128))


class DpTrainer:
    """Opacus per-sample clipping and noise around an optimizer over LoRA parameters."""

    def __init__(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, dp: DpPlan, schedule: DpSchedule
    ) -> None:
        self.mode = dp.mode
        params = [p for p in model.parameters() if p.requires_grad]
        # Noise from local entropy too: a hub-known seed would let the hub subtract the noise.
        gen = torch.Generator(device=params[0].device).manual_seed(secrets.randbits(63))
        common = dict(
            noise_multiplier=schedule.noise_multiplier,
            max_grad_norm=dp.max_grad_norm,
            expected_batch_size=schedule.expected_batch_size,
            loss_reduction="mean",
            generator=gen,
        )
        self.module: GradSampleModule | GradSampleModuleFastGradientClipping
        if dp.mode is DpMode.GHOST:
            self.module = GradSampleModuleFastGradientClipping(
                model, batch_first=True, loss_reduction="mean", max_grad_norm=dp.max_grad_norm, use_ghost_clipping=True
            )
            self.optimizer: DPOptimizer = DPOptimizerFastGradientClipping(optimizer, **common)
        else:
            self.module = GradSampleModule(model, batch_first=True, loss_reduction="mean")
            self.optimizer = DPOptimizer(optimizer, **common)
        self.params = [p for p in self.optimizer.params]

    def step(self, per_sequence_loss: torch.Tensor) -> None:
        """Clip each sequence's (= each video's) gradient, sum, add noise, step."""
        with warnings.catch_warnings():
            # The LoRA layers' inputs are frozen activations; opacus needs only output gradients.
            warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
            if self.mode is DpMode.GHOST:
                DPTensorFastGradientClipping(self.module, self.optimizer, per_sequence_loss, "mean").backward()
            else:
                per_sequence_loss.mean().backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def noise_step(self) -> None:
        """An empty Poisson batch still takes a step of pure noise (the accountant counted it), without
        a forward pass: a VLM forward on zero sequences crashes."""
        for p in self.params:
            if self.mode is DpMode.GHOST:
                p.grad = torch.zeros_like(p)
            else:
                p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def close(self) -> None:
        """Remove opacus' hooks and per-parameter attributes so the model is a plain model again."""
        self.module.cleanup()
