"""LoRA rounds on the engine's already-loaded model: attach, load the global adapter, train, extract, detach."""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from PIL import Image

from protocols.adapters import write_peft_dir
from protocols.errors import ConfigError, ContractError, EngineError
from protocols.finetune import FinetunePlan, LoraPlan
from protocols.tasks import load_task
from site_node.model.loading import LoadedModel
from site_node.store import DataStore
from site_node.training.dp import PRIVACY_UNIT, DpSchedule, DpTrainer, poisson_video_batches, private_rng
from site_node.training.examples import IGNORE, FrameAugment, TrainingSet, build_training_set, encode_batch, load_frames
from site_node.training.guard import PrivacyContext, check_round, require_context, reserve_round, spent_epsilon
from site_node.training.steps import Progress, make_optimizer, plain_steps

_ADAPTER = "default"


@dataclass
class TrainResult:
    """The updated adapter (peft's saved key names, float32, CPU) and what the reply reports about it."""

    state: dict[str, torch.Tensor]
    num_examples: int
    steps: int
    loss: float  # mean per-step loss over non-empty steps (NaN if every DP batch was empty)
    epsilon: float | None = None  # cumulative for the study at this site, per PRIVACY_UNIT
    delta: float | None = None
    privacy_unit: str | None = None
    noise_multiplier: float | None = None
    sample_rate: float | None = None
    empty_steps: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    grpo_stats: dict[str, float] | None = None  # GRPO rounds: aggregate rewards, zero-spread share, KL, clipping

    def reply_metrics(self) -> dict[str, float | int | str]:
        """What a train reply may carry beside the adapter. Under DP the loss stays home: it is computed
        on the private frames without noise, so the reported epsilon would not cover it."""
        out: dict[str, float | int | str] = {"num-examples": self.num_examples, "steps": self.steps}
        if self.epsilon is None:
            out["loss"] = self.loss
            return out
        out.update(
            {
                "epsilon": self.epsilon,
                "delta": float(self.delta or 0.0),
                "privacy-unit": str(self.privacy_unit),
                "noise-multiplier": float(self.noise_multiplier or 0.0),
                "sample-rate": float(self.sample_rate or 0.0),
                "empty-steps": self.empty_steps,
            }
        )
        return out


def peft_config(lora: LoraPlan) -> LoraConfig:
    return LoraConfig(
        r=lora.rank,
        # mypy: torch's stubs type nn.Module attributes as Tensor | Module
        lora_alpha=lora.alpha,  # type: ignore[arg-type]
        lora_dropout=lora.dropout,
        target_modules=lora.peft_target_regex(),
        bias="none",
    )


def _init_adapter(model: PeftModel, seed: int) -> None:
    """Identical initial A (kaiming, as peft) and zero B at every site and on any device: drawn on the
    CPU from a generator keyed by the module name, so CUDA and CPU sites start from the same adapter."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, LoraLayer) and _ADAPTER in module.lora_A:
                a, b = module.lora_A[_ADAPTER].weight, module.lora_B[_ADAPTER].weight
                gen = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63)
                # mypy: torch's stubs type nn.Module attributes as Tensor | Module
                w = torch.empty(a.shape, dtype=torch.float32)  # type: ignore[arg-type]
                torch.nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=gen)
                # mypy: torch's stubs type nn.Module attributes as Tensor | Module
                a.copy_(w)  # type: ignore[operator]
                # mypy: torch's stubs type nn.Module attributes as Tensor | Module
                b.zero_()  # type: ignore[operator]


def attach_lora(lm: LoadedModel, lora: LoraPlan, *, init_seed: int = 0) -> PeftModel:
    """Inject LoRA layers into lm.model in place (no reload); only the adapter is trainable afterwards."""
    if isinstance(lm.model, PeftModel) or any(isinstance(m, LoraLayer) for m in lm.model.modules()):
        raise EngineError("the loaded model already carries a LoRA adapter; detach it first")
    flags = {n: p.requires_grad for n, p in lm.model.named_parameters()}
    try:
        with warnings.catch_warnings():  # peft probes transformers' deprecated is_gradient_checkpointing
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = get_peft_model(lm.model, peft_config(lora), adapter_name=_ADAPTER)
    except ValueError as exc:  # peft injects nothing when no module matches
        raise ConfigError(
            f"LoRA target modules {list(lora.target_modules)} match no layer of the language model: {str(exc)[:200]}"
        ) from exc
    # restored by detach_lora; mypy: torch's stubs type nn.Module attributes as Tensor | Module
    model.surgfed_requires_grad = flags  # type: ignore[assignment]
    _init_adapter(model, init_seed)
    return model


def detach_lora(lm: LoadedModel, model: PeftModel) -> None:
    """Remove the LoRA layers (without merging) and restore the base model's flags and eval mode."""
    base = model.unload()
    if base is not lm.model:
        raise EngineError("peft unloaded a different model object than the engine's")
    flags = getattr(model, "surgfed_requires_grad", {})
    for name, p in base.named_parameters():
        p.requires_grad_(flags.get(name, p.requires_grad))
    base.eval()


def adapter_state(model: PeftModel) -> dict[str, torch.Tensor]:
    """The adapter in peft's saved form (no adapter name in keys), float32 copies on the CPU."""
    state = get_peft_model_state_dict(model, adapter_name=_ADAPTER)
    return {k: v.detach().to("cpu", torch.float32).clone() for k, v in state.items()}


def load_global_adapter(model: PeftModel, state: Mapping[str, torch.Tensor]) -> None:
    """Load a global adapter (any float dtype; cast to the adapter's); refuses missing, extra or misshapen tensors."""
    expected = {k: tuple(v.shape) for k, v in get_peft_model_state_dict(model, adapter_name=_ADAPTER).items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != expected:
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
        raise ContractError(
            f"global adapter does not fit this model's LoRA layers: missing {missing[:2]}, "
            f"unexpected {extra[:2]}, wrong shape {[(k, got[k], expected[k]) for k in wrong[:2]]}"
        )
    result = set_peft_model_state_dict(model, dict(state), adapter_name=_ADAPTER)
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if unexpected:
        raise ContractError(f"global adapter keys were not loaded: {unexpected[:3]}")


@contextmanager
def applied_adapter(lm: LoadedModel, lora: LoraPlan, state: Mapping[str, torch.Tensor]) -> Iterator[LoadedModel]:
    """The engine's model with `state` applied, for evaluation: pass the yielded LoadedModel wherever a
    LoadedModel goes (generate_answers, evaluate_protocol); the adapter is removed on exit."""
    model = attach_lora(lm, lora)
    try:
        load_global_adapter(model, state)
        model.eval()
        yield dataclasses.replace(lm, model=model)
    finally:
        detach_lora(lm, model)


def save_peft_dir(
    state: Mapping[str, torch.Tensor], plan: FinetunePlan, base_model_path: Path | str, out_dir: Path
) -> str:
    """A standard PEFT directory (PeftModel.from_pretrained(base, out_dir) loads it); returns its sha256."""
    return write_peft_dir(state, plan.lora, str(base_model_path), Path(out_dir))


def sequence_losses(model: torch.nn.Module, batch: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Mean answer-token cross-entropy per sequence, shape (batch,). Left padding puts every answer at the
    end, so only the last positions are projected onto the vocabulary (a 7B vocabulary is 152k wide)."""
    keep = int((labels != IGNORE).sum(1).max()) + 1
    logits = model(**batch, logits_to_keep=keep, use_cache=False).logits.float()
    tail = labels[:, -keep:][:, 1:]
    ce = F.cross_entropy(logits[:, :-1].transpose(1, 2), tail, ignore_index=IGNORE, reduction="none")
    mask = (tail != IGNORE).to(ce.dtype)
    return (ce * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def _shuffled_batches(n: int, batch_size: int, steps: int, rng: np.random.Generator) -> list[list[int]]:
    """Epoch-wise shuffles, cut into `steps` batches (every example once per pass)."""
    order: list[int] = []
    while len(order) < steps * batch_size:
        order.extend(int(i) for i in rng.permutation(n))
    return [order[s * batch_size : (s + 1) * batch_size] for s in range(steps)]


def plan_batches(ts: TrainingSet, plan: FinetunePlan, schedule: DpSchedule | None, seed: int) -> list[list[int]]:
    """Example indices per step: Poisson over videos (one frame each) under DP, else epoch-wise shuffles."""
    if schedule is not None:
        return poisson_video_batches(ts.indices_by_unit(), schedule.sample_rate, schedule.steps, private_rng())
    n = len(ts.examples)
    local_steps, epochs, per_step = plan.step_plan()
    steps = local_steps or max(1, math.ceil(float(epochs or 0) * n / per_step))
    return _shuffled_batches(n, min(per_step, n), steps, np.random.default_rng([seed, 0x7A1]))


def precheck_round(store: DataStore, plan: FinetunePlan, privacy: PrivacyContext | None) -> DpSchedule | None:
    """What a job submission can run to refuse at once: reads label files only, then the policy and ledger
    checks; train_round repeats them under the ledger's lock. Returns the DP schedule, None without DP."""
    require_context(plan, privacy)
    if privacy is None:
        return None
    return check_round(plan, privacy, build_training_set(store, plan.sample_every_s).units())


@dataclass
class _Loop:
    """Everything one round's steps share."""

    lm: LoadedModel
    model: PeftModel
    ts: TrainingSet
    frames: dict[int, Image.Image]
    augment: FrameAugment | None
    prompt: str

    def losses(self, forward_model: torch.nn.Module, idx: list[int]) -> torch.Tensor:
        images = [self.frames[i] for i in idx]
        if self.augment is not None:
            images = [self.augment(im) for im in images]
        batch, labels = encode_batch(
            self.lm.processor,
            images,
            [self.ts.examples[i].target for i in idx],
            self.prompt,
            self.lm.device,
            self.lm.dtype,
        )
        return sequence_losses(forward_model, batch, labels)


def _run_plain(loop: _Loop, batches: list[list[int]], plan: FinetunePlan, progress: Progress | None) -> list[float]:
    return plain_steps(loop.model, plan, batches, lambda idx: loop.losses(loop.model, idx).mean(), progress)


def _run_private(
    loop: _Loop, batches: list[list[int]], plan: FinetunePlan, schedule: DpSchedule, progress: Progress | None
) -> tuple[list[float], int]:
    assert plan.dp is not None
    params = [p for p in loop.model.parameters() if p.requires_grad]
    trainer = DpTrainer(loop.model, make_optimizer(params, plan), plan.dp, schedule)
    losses, empty = [], 0
    try:
        for step, idx in enumerate(batches):
            if not idx:
                trainer.noise_step()
                empty += 1
            else:
                per_seq = loop.losses(trainer.module, idx)
                trainer.step(per_seq)
                losses.append(float(per_seq.detach().mean()))
            if progress:
                progress("train", step + 1, len(batches))
    finally:
        trainer.close()
    return losses, empty


def training_mode(model: PeftModel, on: bool, checkpointing: bool) -> None:
    """Train mode (with activation checkpointing if asked) or back to eval mode, leaving no hooks behind."""
    base = model.get_base_model()
    if on:
        model.train()
        if checkpointing:  # transformers 5 names it activation checkpointing (non-reentrant by default)
            if hasattr(base, "activation_checkpointing_enable"):
                # mypy: torch's stubs type nn.Module attributes as Tensor | Module
                base.activation_checkpointing_enable()  # type: ignore[operator]
            else:
                # mypy: torch's stubs type nn.Module attributes as Tensor | Module
                base.gradient_checkpointing_enable({"use_reentrant": False})  # type: ignore[operator]
        return
    if checkpointing:
        if hasattr(base, "activation_checkpointing_disable"):
            # mypy: torch's stubs type nn.Module attributes as Tensor | Module
            base.activation_checkpointing_disable()  # type: ignore[operator]
        else:
            # mypy: torch's stubs type nn.Module attributes as Tensor | Module
            base.gradient_checkpointing_disable()  # type: ignore[operator]
        # Enabling added forward hooks that make embedding outputs require grad; disabling leaves them
        # (transformers removes them only for its own PEFT integration), so remove them here.
        # mypy: torch's stubs type nn.Module attributes as Tensor | Module
        base.disable_input_require_grads()  # type: ignore[operator]
    model.eval()


def _train_attached(
    lm: LoadedModel,
    plan: FinetunePlan,
    loop_parts: tuple[TrainingSet, dict[int, Image.Image]],
    batches: list[list[int]],
    global_state: Mapping[str, torch.Tensor] | None,
    schedule: DpSchedule | None,
    seed: int,
    checkpointing: bool,
    progress: Progress | None,
) -> tuple[dict[str, torch.Tensor], list[float], int]:
    """Attach, load, train, extract, detach: the model leaves exactly as it came, even on an error."""
    ts, frames = loop_parts
    devices = [lm.device] if lm.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # seeds LoRA dropout without touching the engine's RNG
        torch.manual_seed(seed)
        model = attach_lora(lm, plan.lora, init_seed=plan.init_seed)
        try:
            if global_state is not None:
                load_global_adapter(model, global_state)
            training_mode(model, True, checkpointing)
            loop = _Loop(
                lm, model, ts, frames, FrameAugment(seed) if plan.augment else None, load_task("phase").render_prompt()
            )
            if schedule is None:
                losses, empty = _run_plain(loop, batches, plan, progress), 0
            else:
                losses, empty = _run_private(loop, batches, plan, schedule, progress)
            return adapter_state(model), losses, empty
        finally:
            training_mode(model, False, checkpointing)
            detach_lora(lm, model)


def train_round(
    lm: LoadedModel,
    store: DataStore,
    plan: FinetunePlan,
    global_state: Mapping[str, torch.Tensor] | None,
    *,
    seed: int,
    progress: Progress | None = None,
    privacy: PrivacyContext | None = None,
    gradient_checkpointing: bool | None = None,
) -> TrainResult:
    """One local round on the engine's loaded model; it leaves the model exactly as it found it (no adapter).

    With a privacy context the round is checked against the site policy and the ledger, and recorded in the
    ledger, before anything else (without one, e.g. in a benchmark, only a non-DP round runs).
    """
    start = time.perf_counter()
    ts = build_training_set(store, plan.sample_every_s)
    require_context(plan, privacy)
    schedule = None if privacy is None else reserve_round(plan, privacy, ts.units())  # may refuse: nothing touched
    batches = plan_batches(ts, plan, schedule, seed)
    frames = load_frames(
        store,
        ts,
        {i for b in batches for i in b},
        progress=(lambda d, t: progress("frames", d, t)) if progress else None,
    )
    checkpointing = lm.device.type == "cuda" if gradient_checkpointing is None else gradient_checkpointing
    # Opacus' hooks see a checkpointed layer's forward twice (hooks: no grad_sample; ghost: "parameter
    # tying"), so DP rounds keep their activations instead.
    checkpointing = checkpointing and schedule is None
    state, losses, empty = _train_attached(
        lm, plan, (ts, frames), batches, global_state, schedule, seed, checkpointing, progress
    )
    result = TrainResult(
        state=state,
        num_examples=len(ts.examples),
        steps=len(batches),
        loss=float(np.mean(losses)) if losses else float("nan"),
        losses=losses,
        empty_steps=empty,
    )
    if schedule is not None and privacy is not None and plan.dp is not None:
        result.epsilon = spent_epsilon(privacy, plan.dp.delta)  # recorded before the first step
        result.delta, result.privacy_unit = plan.dp.delta, PRIVACY_UNIT
        result.noise_multiplier, result.sample_rate = schedule.noise_multiplier, schedule.sample_rate
    result.seconds = time.perf_counter() - start
    return result
