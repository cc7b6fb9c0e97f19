"""One GRPO round at a site: policy and ledger first, then K steps on the engine's model, which leaves as it came."""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from peft import PeftModel
from PIL import Image

from protocols.finetune import DpMode, FinetunePlan, GrpoPlan
from protocols.tasks import load_task
from site_node.model.loading import LoadedModel
from site_node.store import DataStore
from site_node.training.dp import PRIVACY_UNIT, DpSchedule, DpTrainer
from site_node.training.examples import TrainingExample, TrainingSet, build_training_set, load_frames
from site_node.training.grpo import (
    GrpoStats,
    StepData,
    plain_loss,
    private_losses,
    sample_rollout,
    score_rollout,
    step_terms,
    trainable_snapshot,
)
from site_node.training.guard import PrivacyContext, require_context, reserve_round, spent_epsilon
from site_node.training.lora import (
    TrainResult,
    adapter_state,
    attach_lora,
    detach_lora,
    load_global_adapter,
    plan_batches,
    training_mode,
)
from site_node.training.rewards import FrameTruth, Rewarder
from site_node.training.steps import Progress, make_optimizer, plain_steps

TASK = "phase"  # the prompt GRPO answers, as SFT trains it; its definition names its reward


def frame_truth(ex: TrainingExample) -> FrameTruth:
    return FrameTruth(phase=ex.phase, tools=ex.tools, triplets=ex.triplets, cvs=ex.cvs)


@dataclass
class _Grpo:
    """Everything one round's steps share."""

    lm: LoadedModel
    model: PeftModel
    grpo: GrpoPlan
    ts: TrainingSet
    frames: dict[int, Image.Image]
    rewarder: Rewarder
    reference: dict[str, torch.Tensor]  # the incoming global adapter's trainable weights
    stats: GrpoStats
    prompt: str = ""

    def scored(self, idx: list[int]) -> StepData:
        rollout = sample_rollout(self.lm, self.model, [self.frames[i] for i in idx], self.prompt, self.grpo)
        truths = [frame_truth(self.ts.examples[i]) for i in idx]
        videos = [self.ts.examples[i].video_id for i in idx]
        self.stats.videos.update(videos)
        return score_rollout(rollout, truths, self.rewarder, self.grpo.group_size, self.stats, videos)


def _run_plain(run: _Grpo, batches: list[list[int]], plan: FinetunePlan, progress: Progress | None) -> list[float]:
    def step_loss(idx: list[int]) -> torch.Tensor | None:
        data = run.scored(idx)
        if bool(data.zero_spread.all()) and run.grpo.beta == 0.0:
            return None  # no group has a reward spread and nothing pulls to the reference: no gradient
        return plain_loss(step_terms(run.model, run.model, data, run.grpo, run.reference), data, run.stats)

    return plain_steps(run.model, plan, batches, step_loss, progress)


def private_step(trainer: DpTrainer, per_video: torch.Tensor, group_size: int) -> None:
    """A frame's G completions are one video's one sample: after the backward of the per-video mean, sum each
    group's per-row gradients (opacus scaled every row by the number of rows, G times the video's share), so
    the optimizer clips per video, adds noise and steps."""
    with warnings.catch_warnings():  # the LoRA layers' inputs are frozen activations; opacus needs outputs only
        warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
        per_video.mean().backward()
    for p in trainer.params:
        gs = p.grad_sample
        p.grad_sample = gs.reshape(per_video.shape[0], group_size, *gs.shape[1:]).sum(1) / group_size
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)


def _run_private(run: _Grpo, batches: list[list[int]], plan: FinetunePlan, schedule: DpSchedule,
                 progress: Progress | None) -> tuple[list[float], int]:  # fmt: skip
    assert plan.dp is not None
    params = [p for p in run.model.parameters() if p.requires_grad]
    # Per-video clipping of grouped rows needs the per-row gradients themselves: opacus' hooks mode.
    dp = dataclasses.replace(plan.dp, mode=DpMode.HOOKS)
    trainer = DpTrainer(run.model, make_optimizer(params, plan), dp, schedule)
    losses, empty = [], 0
    try:
        for step, idx in enumerate(batches):
            if not idx:
                trainer.noise_step()
                empty += 1
            else:
                data = run.scored(idx)
                terms = step_terms(trainer.module, run.model, data, run.grpo, run.reference)
                per_video = private_losses(terms, data, run.grpo.group_size, run.stats)
                private_step(trainer, per_video, run.grpo.group_size)
                losses.append(float(per_video.detach().mean()))
            if progress:
                progress("train", step + 1, len(batches))
    finally:
        trainer.close()
    return losses, empty


def _train_attached(lm: LoadedModel, plan: FinetunePlan, ts: TrainingSet, frames: dict[int, Image.Image],
                    batches: list[list[int]], global_state: Mapping[str, torch.Tensor] | None,
                    schedule: DpSchedule | None, seed: int, progress: Progress | None,
                    ) -> tuple[dict[str, torch.Tensor], list[float], int, GrpoStats]:  # fmt: skip
    """Attach, load the incoming adapter (the KL reference), run K steps, extract, detach (also on an error)."""
    assert plan.grpo is not None
    devices = [lm.device] if lm.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # sampling and dropout from the site's seed, engine RNG untouched
        torch.manual_seed(seed)
        model = attach_lora(lm, plan.lora, init_seed=plan.init_seed)
        try:
            if global_state is not None:
                load_global_adapter(model, global_state)
            training_mode(model, True, False)
            task = load_task(TASK)
            run = _Grpo(lm, model, plan.grpo, ts, frames, Rewarder(TASK, plan.grpo.reward_weights),
                        trainable_snapshot(model), GrpoStats(), task.render_prompt())  # fmt: skip
            if schedule is None:
                losses, empty = _run_plain(run, batches, plan, progress), 0
            else:
                losses, empty = _run_private(run, batches, plan, schedule, progress)
            return adapter_state(model), losses, empty, run.stats
        finally:
            training_mode(model, False, False)
            detach_lora(lm, model)


def grpo_round(
    lm: LoadedModel,
    store: DataStore,
    plan: FinetunePlan,
    global_state: Mapping[str, torch.Tensor] | None,
    *,
    seed: int,
    progress: Progress | None = None,
    privacy: PrivacyContext | None = None,
) -> TrainResult:
    """One local GRPO round. With a privacy context the round is checked against the site policy and the ledger,
    and recorded, before any frame is read or sampled; without one only a non-DP round runs."""
    start = time.perf_counter()
    ts = build_training_set(store, plan.sample_every_s)
    require_context(plan, privacy)
    schedule = None if privacy is None else reserve_round(plan, privacy, ts.units())  # may refuse: nothing sampled
    batches = plan_batches(ts, plan, schedule, seed)
    frames = load_frames(store, ts, {i for b in batches for i in b},
                         progress=(lambda d, t: progress("frames", d, t)) if progress else None)  # fmt: skip
    state, losses, empty, stats = _train_attached(lm, plan, ts, frames, batches, global_state, schedule, seed, progress)
    result = TrainResult(
        state=state,
        num_examples=len(ts.examples),
        steps=len(batches),
        loss=float(sum(losses) / len(losses)) if losses else float("nan"),
        losses=losses,
        empty_steps=empty,
        grpo_stats=stats.means() | {"frames": float(stats.frames), "videos": float(len(stats.videos))},
    )
    if schedule is not None and privacy is not None and plan.dp is not None:
        result.epsilon = spent_epsilon(privacy, plan.dp.delta)
        result.delta, result.privacy_unit = plan.dp.delta, PRIVACY_UNIT
        result.noise_multiplier, result.sample_rate = schedule.noise_multiplier, schedule.sample_rate
    result.seconds = time.perf_counter() - start
    return result
