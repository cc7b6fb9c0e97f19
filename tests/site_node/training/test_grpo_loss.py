"""GRPO arithmetic against hand computations written out here (TRL's GRPOTrainer semantics, loss_type='dapo')."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from site_node.training.grpo_loss import STD_EPS, dapo_loss, group_advantages, group_losses, token_terms


def test_advantages_sum_to_zero_within_each_group_and_match_the_hand_computation() -> None:
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.2, 0.2, 0.2, 0.2], [3.0, 1.0, 2.0, 0.0]])
    adv, zero = group_advantages(rewards)
    assert torch.allclose(adv.sum(dim=1), torch.zeros(3), atol=1e-6)
    # group 0: mean 0.5, unbiased std sqrt((4 * 0.25) / 3)
    s0 = math.sqrt(1.0 / 3.0)
    assert adv[0].tolist() == pytest.approx([d / (s0 + STD_EPS) for d in (0.5, -0.5, -0.5, 0.5)])
    # group 2: mean 1.5, deviations 1.5, -0.5, 0.5, -1.5, unbiased std sqrt(5 / 3)
    s2 = math.sqrt(5.0 / 3.0)
    assert adv[2].tolist() == pytest.approx([d / (s2 + STD_EPS) for d in (1.5, -0.5, 0.5, -1.5)])
    # the constant group: flagged, and no advantage at all
    assert zero.tolist() == [False, True, False] and adv[1].tolist() == [0.0] * 4


@pytest.mark.parametrize("shape", [(4,), (3, 1)])
def test_advantages_need_groups(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="rewards must be shaped"):
        group_advantages(torch.zeros(shape))


def test_token_terms_match_the_hand_computation() -> None:
    # two completions of two tokens; row 0 advantage +1, row 1 advantage -2; eps 0.2, beta 0.1
    logps = torch.tensor([[-1.0, -0.5], [-2.0, -0.1]])
    old = torch.tensor([[-1.5, -0.5], [-1.0, -0.3]])
    ref = torch.tensor([[-1.0, -0.7], [-2.5, -0.1]])
    adv = torch.tensor([1.0, -2.0])
    terms = token_terms(logps, old, ref, adv, epsilon=0.2, beta=0.1)
    expected_loss, expected_kl, expected_clip = [], [], []
    for i in range(2):
        for j in range(2):
            ratio = math.exp(logps[i, j].item() - old[i, j].item())
            a = adv[i].item()
            unclipped, clipped = ratio * a, min(max(ratio, 0.8), 1.2) * a
            d = ref[i, j].item() - logps[i, j].item()
            kl = math.exp(d) - d - 1
            expected_loss.append(-min(unclipped, clipped) + 0.1 * kl)
            expected_kl.append(kl)
            expected_clip.append(float(unclipped > clipped))
    assert terms.loss.flatten().tolist() == pytest.approx(expected_loss, rel=1e-6)
    assert terms.kl.flatten().tolist() == pytest.approx(expected_kl, rel=1e-6, abs=1e-7)
    # row 0 token 0: ratio e^0.5 = 1.65 > 1.2 with A > 0 clips; row 1 token 0: ratio e^-1 = 0.37 < 0.8 with A < 0
    # clips too (-2 * 0.8 = -1.6 < -0.74); the others stay inside
    assert expected_clip == [1.0, 0.0, 1.0, 0.0] and terms.clipped.flatten().tolist() == expected_clip


def test_kl_is_zero_and_has_no_gradient_where_policy_equals_reference() -> None:
    logps = torch.tensor([[-1.0, -0.25, -3.0]], requires_grad=True)
    terms = token_terms(logps, logps.detach(), logps.detach().clone(), torch.tensor([0.0]), epsilon=0.2, beta=0.5)
    assert terms.kl.abs().max().item() == 0.0
    dapo_loss(terms.loss, torch.ones(1, 3)).backward()
    assert logps.grad is not None and logps.grad.abs().max().item() == 0.0


def test_first_update_gradient_is_minus_advantage_per_token() -> None:
    # at old == current (num_iterations = 1) the ratio is 1: d loss / d logp = -A / (tokens in the batch)
    logps = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -0.5]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    adv = torch.tensor([1.5, -0.5])
    terms = token_terms(logps, logps.detach(), None, adv, epsilon=0.2, beta=0.0)
    dapo_loss(terms.loss, mask).backward()
    assert logps.grad is not None
    assert logps.grad.flatten().tolist() == pytest.approx([-1.5 / 5, -1.5 / 5, 0.0] + [0.5 / 5] * 3)


def test_dapo_and_group_losses_normalise_by_tokens() -> None:
    per_token = torch.tensor([[1.0, 2.0, 9.0], [3.0, 0.0, 0.0], [4.0, 4.0, 4.0], [1.0, 9.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    # every unmasked token of the batch weighs the same: (1 + 2 + 3 + 12 + 1) / 7
    assert dapo_loss(per_token, mask).item() == pytest.approx(19.0 / 7.0)
    # groups of 2 rows: (1 + 2 + 3) / 3 and (12 + 1) / 4
    assert group_losses(per_token, mask, 2).tolist() == pytest.approx([2.0, 13.0 / 4.0])
    with pytest.raises(ValueError, match="not whole groups of 3"):
        group_losses(per_token, mask, 3)


def test_private_step_clips_each_video_as_one_sample_of_its_g_rows() -> None:
    """Without noise and with a clip bound no gradient reaches, a DP step moves the weights by exactly the mean
    over videos of each video's own gradient (its G rows together); with a tiny bound, by at most C per video."""
    from protocols.finetune import DpMode, DpPlan
    from site_node.training.dp import DpSchedule, DpTrainer
    from site_node.training.grpo_round import private_step

    torch.manual_seed(0)
    videos, group = 3, 4
    x = torch.randn(videos * group, 5, 6)  # rows x tokens x features
    for clip, check in ((1e6, "exact"), (1e-3, "bounded")):
        model = torch.nn.Linear(6, 1, bias=False)
        start = model.weight.detach().clone()

        def per_video(m: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
            per_token = m(x).squeeze(-1) ** 2  # (rows, tokens)
            return group_losses(per_token, torch.ones_like(per_token), group)

        expected = []
        for v in range(videos):
            w = start.clone().requires_grad_(True)
            loss = per_video(lambda t: t @ w.T)[v]  # noqa: B023 - used at once, in this iteration
            (g,) = torch.autograd.grad(loss, w)
            expected.append(g)
        dp = DpPlan(target_epsilon=1.0, delta=1e-5, max_grad_norm=clip, noise_multiplier=1e-12, mode=DpMode.HOOKS)
        trainer = DpTrainer(model, torch.optim.SGD(model.parameters(), lr=1.0), dp, DpSchedule(1e-12, 1.0, 1, videos))
        try:
            private_step(trainer, per_video(trainer.module), group)
        finally:
            trainer.close()
        step = start - model.weight.detach()
        if check == "exact":
            assert torch.allclose(step, torch.stack(expected).mean(0), atol=1e-5)
        else:
            assert step.norm().item() <= clip * 1.0001 and step.norm().item() > 0.5 * clip
