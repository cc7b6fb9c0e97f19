"""`site_node score` and `site_node evaluate`: local scoring and dry runs; registered beside the other commands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocols.errors import UsageError

if TYPE_CHECKING:  # the model stack loads only when a command needs it
    from site_node.model.openai_backend import OpenAIModel

_MAX_PROBLEMS_SHOWN = 20


def _label_specs(args: argparse.Namespace) -> list[Any]:
    from site_node.scoring import LabelSpec

    labels, formats, names = args.labels, args.format, args.dataset or []
    if len(formats) != len(labels):
        raise UsageError(f"give one --format per --labels, got {len(labels)} --labels and {len(formats)} --format")
    if names and len(names) != len(labels):
        raise UsageError(f"give one --dataset per --labels or none, got {len(names)} for {len(labels)}")
    default = [(p if p.is_dir() else p.parent).resolve().name for p in labels]
    return [LabelSpec(p, f, n) for p, f, n in zip(labels, formats, names or default, strict=False)]


def _seed(args: argparse.Namespace) -> tuple[int, int]:
    """From the protocol (as the engine seeds the task), else --seed/--replicates."""
    if args.protocol is None:
        return args.seed, args.replicates
    from protocols.study import load_protocol
    from site_node.scoring import task_seed

    protocol = load_protocol(args.protocol)
    return task_seed(protocol, args.task), protocol.privacy.bootstrap_replicates


def cmd_score(args: argparse.Namespace) -> int:
    from site_node.scoring import load_label_sets, read_predictions, score_records, write_metrics
    from site_node.task_runtime import runtime_for

    rt = runtime_for(args.task)
    specs = _label_specs(args)
    seed, replicates = _seed(args)
    labels, skipped = load_label_sets(rt, specs)
    records, problems = read_predictions(args.predictions)
    score = score_records(rt, labels, records, seed=seed, replicates=replicates, skipped=skipped, problems=problems)
    write_metrics(args.out, score.to_json())
    for name, e in score.estimates.items():
        print(
            f"{args.task}.{name}\t{e.estimate:.4f}\t[{e.ci_low:.4f}, {e.ci_high:.4f}]\t{e.n_videos} videos\t"
            f"{e.n_frames} frames\tparse fail {e.parse_fail_rate:.3f}"
        )
    for video, reason in sorted(score.skipped.items()):
        print(f"skipped {video}: {reason}", file=sys.stderr)
    for problem in score.problems[:_MAX_PROBLEMS_SHOWN]:
        print(problem, file=sys.stderr)
    if len(score.problems) > _MAX_PROBLEMS_SHOWN:
        print(f"... {len(score.problems) - _MAX_PROBLEMS_SHOWN} more problems in {args.out}", file=sys.stderr)
    print(f"metrics written to {args.out}")
    return 0


def _model_dir(args: argparse.Namespace) -> tuple[Path, str, int, OpenAIModel | None]:
    """--model, else the site home's configured model (and its model server, with [model] backend = "openai");
    device and batch size from the home when there is one."""
    from site_node.home import ModelBackend, SiteHome

    device, batch, config = args.device, args.batch_size, None
    served: OpenAIModel | None = None
    if args.home is not None and (Path(args.home) / "site.toml").is_file():
        config = SiteHome(args.home).config()
        model = args.model or config.model_dir
        device, batch = device or config.device, batch or config.batch_size
    else:
        model = args.model
    if model is None:
        raise UsageError("no model: pass --model DIR (or --home of a site whose site.toml names one)")
    if config is not None and args.model is None and config.backend is ModelBackend.OPENAI:
        from site_node.model.openai_backend import served_model

        served = served_model(config, Path(model))
    return Path(model), device or "auto", batch or 8, served


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from site_node.local_eval import run_local, summary_lines

    model, device, batch, served = _model_dir(args)
    bars: dict[str, Any] = {}

    def progress(task: str, done: int, total: int) -> None:
        if task not in bars:
            bars[task] = tqdm(total=total, desc=task, unit="frame", file=sys.stderr)
        bar = bars[task]
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    summary = run_local(
        args.protocol,
        args.data,
        args.out,
        model=model,
        adapter=args.adapter,
        device=device,
        batch_size=batch,
        progress=progress,
        served=served,
    )
    for bar in bars.values():
        bar.close()
    print("\n".join(summary_lines(summary)))
    print(f"results in {args.out} (metrics.json, metrics-TASK.json, predictions.jsonl stays on this machine)")
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `score` and `evaluate` to the site_node command line."""
    from site_node.datasets.registry import FORMATS

    p = sub.add_parser("score", parents=[common], help="score a predictions file against local labels")
    p.add_argument("--task", required=True, help="phase, triplet, action, cvs or localization")
    p.add_argument(
        "--labels", type=Path, action="append", required=True, help="dataset folder or label file (repeatable)"
    )
    p.add_argument("--format", action="append", required=True, choices=FORMATS, help="format of each --labels")
    p.add_argument(
        "--dataset", action="append", help="the name the predictions use for each --labels (default: folder name)"
    )
    p.add_argument("--predictions", type=Path, required=True, help="JSON lines: video, frame, answer (+ logprobs)")
    p.add_argument("--out", type=Path, required=True, help="METRICS.json to write")
    p.add_argument("--protocol", type=Path, help="seed and replicates from this protocol (as `evaluate` used)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed without --protocol")
    p.add_argument("--replicates", type=int, default=1000, help="bootstrap replicates without --protocol")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("evaluate", parents=[common], help="run a protocol on local data without a hub (dry run)")
    p.add_argument("--protocol", type=Path, required=True, help="study protocol YAML")
    p.add_argument("--data", type=Path, required=True, help="dataset folder(s), a data store, or a site home")
    p.add_argument("--out", type=Path, required=True, help="results folder")
    p.add_argument("--model", type=Path, help="model directory, loaded here (default: the site's [model])")
    p.add_argument("--adapter", type=Path, help="LoRA adapter directory to merge into the model")
    p.add_argument("--device", help="auto, cpu or cuda[:N] (default: the site's, else auto)")
    p.add_argument("--batch-size", type=int, help="frames per generation batch (default: the site's, else 8)")
    p.set_defaults(func=cmd_evaluate)
