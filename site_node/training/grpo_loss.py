"""GRPO's arithmetic as TRL's GRPOTrainer does it: group-normalised advantages, clipped ratio, k3 KL, DAPO averaging."""

from __future__ import annotations

from dataclasses import dataclass

import torch

STD_EPS = 1e-4  # TRL's: advantages = (r - group mean) / (group std + 1e-4)


def group_advantages(rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, zero-spread flags) of rewards shaped (frames, G). Each group's advantages sum to zero; a group
    whose G rewards are all equal gets zero advantages, so it contributes no policy gradient."""
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be shaped (frames, G >= 2), got {tuple(rewards.shape)}")
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True)  # unbiased, as torch and TRL
    zero = torch.isclose(std.squeeze(1), torch.zeros_like(std.squeeze(1)))
    adv = (rewards - mean) / (std + STD_EPS)
    return torch.where(zero.unsqueeze(1), torch.zeros_like(adv), adv), zero


@dataclass(frozen=True)
class TokenTerms:
    """Per completion token: the loss (clipped surrogate + beta * KL), the k3 KL estimate, and whether it clipped."""

    loss: torch.Tensor
    kl: torch.Tensor
    clipped: torch.Tensor


def token_terms(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    ref_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    *,
    epsilon: float,
    beta: float,
) -> TokenTerms:
    """TRL's per-token GRPO loss: -min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A) + beta * k3, with
    k3 = exp(ref - logp) - (ref - logp) - 1 (zero where policy and reference agree). Shapes (rows, tokens)."""
    ratio = torch.exp(logps - old_logps)
    adv = advantages.unsqueeze(1)
    unclipped, clipped = ratio * adv, torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * adv
    loss = -torch.min(unclipped, clipped)
    kl = torch.zeros_like(logps)
    if beta != 0.0 and ref_logps is not None:
        kl = torch.exp(ref_logps - logps) - (ref_logps - logps) - 1
        loss = loss + beta * kl
    return TokenTerms(loss, kl, (unclipped > clipped).to(logps.dtype))


def dapo_loss(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token-level normalisation (DAPO; TRL's loss_type='dapo'): every completion token of the batch weighs the same."""
    return (per_token * mask).sum() / mask.sum().clamp(min=1.0)


def group_losses(per_token: torch.Tensor, mask: torch.Tensor, group_size: int) -> torch.Tensor:
    """Each group's token-normalised loss, shape (frames,): the per-sample losses of DP, where a frame's G
    completions are one video's one sample. Normalising within the group keeps a sample's loss free of the
    other sampled videos' completion lengths."""
    rows = per_token.shape[0]
    if rows % group_size:
        raise ValueError(f"{rows} completion rows are not whole groups of {group_size}")
    summed = (per_token * mask).sum(dim=1).view(-1, group_size).sum(dim=1)
    tokens = mask.sum(dim=1).view(-1, group_size).sum(dim=1)
    return summed / tokens.clamp(min=1.0)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    return float((values * mask).sum() / mask.sum().clamp(min=1.0))
