"""The site policy for training: DP required, enough units, delta bound, study budget and site-wide cap."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from protocols.errors import ConfigError, ProtocolError
from protocols.finetune import FinetunePlan
from site_node.policy import PolicyRefused, SitePolicy
from site_node.training.dp import PRIVACY_UNIT, DpSchedule, PrivacyBudgetExceeded, dp_schedule
from site_node.training.ledger import Round, SiteLedger, study_epsilon, unit_epsilons


@dataclass(frozen=True)
class PrivacyContext:
    """What every training round at a site answers to: its ledger, its policy, the study and its round plan."""

    ledger: SiteLedger
    study_id: str
    total_rounds: int
    round: int | None = None
    budget_epsilon: float | None = None  # the site's per-study cap ([privacy] epsilon_budget); None: the plan's
    policy: SitePolicy = SitePolicy()


def _schedule(plan: FinetunePlan, ctx: PrivacyContext, n_units: int) -> DpSchedule | None:
    """The policy checks that need no ledger; the DP schedule, or None for a (permitted) non-DP round."""
    if plan.dp is None:
        if ctx.policy.require_dp:
            raise PolicyRefused(
                f"study {ctx.study_id} asks for fine-tuning without differential privacy; the site policy "
                "requires DP (require_dp = true)"
            )
        return None
    try:
        plan.dp.check_delta(n_units)
    except ProtocolError as exc:
        raise PolicyRefused(str(exc)) from None
    local_steps, epochs, per_step = plan.step_plan()  # SFT's steps and batch, or GRPO's steps and frames per step
    return dp_schedule(
        plan.dp,
        n_videos=n_units,
        batch_size=per_step,
        local_steps=local_steps,
        epochs=epochs,
        total_rounds=ctx.total_rounds,
    )


def _check_budgets(rounds: list[Round], plan: FinetunePlan, ctx: PrivacyContext, units: Sequence[str],
                   schedule: DpSchedule | None) -> float | None:  # fmt: skip
    """Projected study epsilon after this round; PrivacyBudgetExceeded past the study budget or site cap."""
    if schedule is None or plan.dp is None:
        return None  # a permitted non-DP round is recorded as unbounded for its units
    mech = (schedule.noise_multiplier, schedule.sample_rate, schedule.steps)
    delta = plan.dp.delta
    budget = plan.dp.target_epsilon if ctx.budget_epsilon is None else min(ctx.budget_epsilon, plan.dp.target_epsilon)
    spent, projected = study_epsilon(rounds, ctx.study_id, delta), study_epsilon(rounds, ctx.study_id, delta, mech)
    if projected > budget:
        raise PrivacyBudgetExceeded(
            f"study {ctx.study_id}: this round would raise epsilon (per {PRIVACY_UNIT}, delta={delta:g}) from "
            f"{spent:.3f} to {projected:.3f}, past the site's budget of {budget:g}; refused before training"
        )
    worst = max(unit_epsilons(rounds, units, delta, mech).values(), default=0.0)
    if worst > ctx.policy.epsilon_cap:
        shown = "unbounded (trained without DP before)" if math.isinf(worst) else f"{worst:.3f}"
        raise PrivacyBudgetExceeded(
            f"study {ctx.study_id}: after this round some {PRIVACY_UNIT}s would have spent epsilon {shown} over "
            f"all studies, past the site-wide cap of {ctx.policy.epsilon_cap:g}; refused before training"
        )
    return projected


def check_round(plan: FinetunePlan, ctx: PrivacyContext, units: Sequence[str]) -> DpSchedule | None:
    """Everything the policy and ledger say about a round on `units` (distinct case keys), without recording."""
    if len(units) < ctx.policy.min_train_videos:
        raise PolicyRefused(
            f"study {ctx.study_id}: {len(units)} distinct videos to train on, fewer than the site policy's "
            f"min_train_videos = {ctx.policy.min_train_videos}"
        )
    schedule = _schedule(plan, ctx, len(units))
    _check_budgets(ctx.ledger.rounds(), plan, ctx, units, schedule)
    return schedule


def reserve_round(plan: FinetunePlan, ctx: PrivacyContext, units: Sequence[str]) -> DpSchedule | None:
    """Check and record in one step under the ledger's file lock, before any frame is read: the round counts
    from here on, also if it later fails (it may already have touched the data)."""
    with ctx.ledger.locked():
        schedule = check_round(plan, ctx, units)
        mech = None if schedule is None else (schedule.noise_multiplier, schedule.sample_rate, schedule.steps)
        ctx.ledger.append(ctx.study_id, ctx.round, units, mech, None if plan.dp is None else plan.dp.delta)
    return schedule


def spent_epsilon(ctx: PrivacyContext, delta: float) -> float:
    """The study's epsilon at this site after the rounds recorded so far."""
    return study_epsilon(ctx.ledger.rounds(), ctx.study_id, delta)


def require_context(plan: FinetunePlan, ctx: PrivacyContext | None) -> None:
    if plan.dp is not None and ctx is None:
        raise ConfigError("the plan asks for DP training, but no privacy ledger was given")
