"""The optimiser of a fine-tuning plan and its plain (non-DP) step loop, shared by SFT and GRPO rounds."""

from __future__ import annotations

from collections.abc import Callable

import torch

from protocols.finetune import FinetunePlan, OptimizerKind

Progress = Callable[[str, int, int], None]  # stage ("frames" | "train"), done, total


def make_optimizer(params: list[torch.nn.Parameter], plan: FinetunePlan) -> torch.optim.Optimizer:
    """The plan's optimiser at its learning rate (GRPO's own, for a GRPO round)."""
    lr = plan.grpo.lr if plan.grpo is not None else plan.lr
    if plan.optimizer is OptimizerKind.SGD:
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)


def plain_steps(
    model: torch.nn.Module,
    plan: FinetunePlan,
    batches: list[list[int]],
    step_loss: Callable[[list[int]], torch.Tensor | None],
    progress: Progress | None,
) -> list[float]:
    """One optimiser step per batch without DP (SFT and GRPO alike); `step_loss` None: no gradient, loss 0."""
    params = [p for p in model.parameters() if p.requires_grad]
    optim = make_optimizer(params, plan)
    losses = []
    for step, idx in enumerate(batches):
        loss = step_loss(idx)
        if loss is None:
            losses.append(0.0)
        else:
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optim.step()
            losses.append(float(loss.detach()))
        if progress:
            progress("train", step + 1, len(batches))
    return losses
