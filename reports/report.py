"""`write_report`: the tidy results table in, per-center tables, pooled estimates, plots and HTML out."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from protocols.errors import ConfigError, DataError
from protocols.results import COLUMNS
from protocols.tasks import Scale
from reports import grounding, html, methods, plots, tables
from reports.analysis import analyse, per_center_table
from reports.arena import arena_frame, arena_scores
from reports.blind import Blinder, find_leaks
from reports.frame import POOLED, first_seen, select_round, validate_results
from reports.layout import Table, arena_table, pct, pooling_table, rounds_table, sensitivity_table, small, task_table
from reports.meta import StudyMeta
from reports.pooling import Method
from reports.taskinfo import TaskInfo, resolve_task_infos

FORMATS: tuple[str, ...] = ("csv", "md", "tex", "html")


@dataclass
class _Study:
    """Everything the writers need, already blinded when blinding is on."""

    results: pd.DataFrame  # all rounds
    round: int
    per_center: pd.DataFrame
    infos: dict[str, TaskInfo]
    meta: StudyMeta
    method: Method
    arena_tasks: list[str]
    arena: pd.DataFrame
    arena_table: Table
    blind: bool

    @property
    def tasks(self) -> list[str]:
        return first_seen(self.per_center["task"])

    @property
    def multi_round(self) -> bool:
        return int(self.results["round"].nunique()) > 1


def check_formats(formats: Sequence[str] | str) -> set[str]:
    """The chosen output formats; a string is read as the CLI's comma-separated list."""
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    chosen = {f.strip().lower() for f in items if f.strip()}
    unknown = sorted(chosen - set(FORMATS))
    if unknown or not chosen:
        raise ConfigError(f"unknown report formats {unknown or list(formats)}; expected some of {list(FORMATS)}")
    return chosen


def _prepare(
    results: pd.DataFrame,
    meta: StudyMeta,
    round: int | None,
    blinder_on: bool,
    hartung_knapp: bool,
    tasks: Mapping[str, TaskInfo] | None,
) -> tuple[_Study, Blinder]:
    df = validate_results(results)
    study = str(df["study"].iloc[0])
    if meta.study != study:
        raise DataError(f"metadata is for study {meta.study!r} but the results are for study {study!r}")
    infos = resolve_task_infos(first_seen(df["task"]), tasks)
    blinder = Blinder([*first_seen(df["center"]), *[s.center for s in meta.sites]], enabled=blinder_on)
    df, meta = blinder.frame(df), blinder.meta(meta)
    infos = {t: dataclasses.replace(i, title=blinder.text(i.title)) for t, i in infos.items()}
    round_, rows = select_round(df, round)
    per_center = per_center_table(analyse(rows, infos, hartung_knapp=hartung_knapp), meta.study, round_)
    arena_tasks, scores = arena_scores(per_center, infos)
    st = _Study(
        results=df,
        round=round_,
        per_center=per_center,
        infos=infos,
        meta=meta,
        method=Method.DL_HK if hartung_knapp else Method.DL,
        arena_tasks=arena_tasks,
        arena=arena_frame(scores, meta.study, round_),
        arena_table=arena_table(arena_tasks, scores, infos),
        blind=blinder_on,
    )
    return st, blinder


def _forest(st: _Study, task: str, out_dir: Path) -> tuple[list[Path], html.Figure]:
    info = st.infos[task]
    lead = info.lead(st.per_center.loc[st.per_center["task"] == task, "metric"])
    df = st.per_center[(st.per_center["task"] == task) & (st.per_center["metric"] == lead)]
    pooled = df[df["center"] == POOLED].iloc[0]
    scale = "logit" if info.scales[lead] is Scale.PROPORTION else "original"
    caption = (
        f"{st.method.value} random effects; τ² = {small(pooled['tau2'])} ({scale} scale), "
        f"I² = {pct(pooled['i2'])}, k = {pooled['k']}. Squares sized by weight; hollow squares are not pooled."
    )
    title = f"{info.title or task}: {lead}"
    fig = plots.forest_figure(df, title, f"{lead} (95% CI)", caption, proportion=info.scales[lead] is Scale.PROPORTION)
    png, svg = plots.save_figure(fig, out_dir, f"forest_{task}")
    return [png, svg], html.Figure(svg.read_text(encoding="utf-8"), f"Forest plot, {title}. {caption}")


def _rounds_plot(st: _Study, task: str, out_dir: Path) -> tuple[list[Path], html.Figure]:
    info = st.infos[task]
    lead = info.lead(st.results.loc[st.results["task"] == task, "metric"])
    df = st.results[(st.results["task"] == task) & (st.results["metric"] == lead)]
    labels = {r: f"Round {r}\n{d}" for r, d in st.meta.round_dates.items()}
    title = f"{info.title or task}: {lead} across rounds"
    fig = plots.rounds_figure(df, title, f"{lead} (95% CI)", labels)
    png, svg = plots.save_figure(fig, out_dir, f"rounds_{task}")
    caption = f"{title}. Circles: trainers; open squares: held-out centers; triangles: evaluation only."
    return [png, svg], html.Figure(svg.read_text(encoding="utf-8"), caption)


def _sections(st: _Study, out_dir: Path) -> tuple[list[Path], list[html.Section]]:
    written: list[Path] = []
    sections = [html.Section("Summary", [st.arena_table])]
    for task in st.tasks:
        info = st.infos[task]
        task_rows = st.per_center[st.per_center["task"] == task]
        section = html.Section(f"{info.title or task} ({task})")
        if task == grounding.TASK:  # the reasoning levels: a compact table first, then the full ones
            section = html.Section(grounding.TITLE, [grounding.grounding_table(task_rows, info, st.method.value)])
        section.tables += [task_table(task_rows, task, info, st.method.value), pooling_table(task_rows, task, info)]
        sensitivity = sensitivity_table(task_rows, task, info)
        if sensitivity is not None:
            section.tables.append(sensitivity)
        paths, fig = _forest(st, task, out_dir)
        written += paths
        section.figures.append(fig)
        if st.multi_round:
            section.tables.append(rounds_table(st.results, task, info))
            paths, fig = _rounds_plot(st, task, out_dir)
            written += paths
            section.figures.append(fig)
        sections.append(section)
    return written, sections


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8", newline="\n")
    return path


def _write_csvs(st: _Study, out_dir: Path) -> list[Path]:
    written = [
        tables.write_csv(st.per_center, out_dir / "per_center.csv"),
        tables.write_csv(st.arena, out_dir / "arena.csv"),
    ]
    if st.multi_round:
        rounds = st.results.loc[:, list(COLUMNS)].sort_values("round", kind="stable")
        written.append(tables.write_csv(rounds, out_dir / "rounds.csv"))
    return written


def _write_documents(st: _Study, sections: list[html.Section], out_dir: Path, formats: set[str]) -> list[Path]:
    title = f"External validation report: {st.meta.study}, round {st.round}"
    n_centers = st.per_center.loc[st.per_center["center"] != POOLED, "center"].nunique()
    intro = [f"Tasks: {', '.join(st.tasks)}. Centers reporting in round {st.round}: {n_centers}."]
    paragraphs = methods.methods_paragraphs(
        st.meta, st.infos, st.round, hartung_knapp=st.method is Method.DL_HK, blind=st.blind, arena_tasks=st.arena_tasks
    )
    all_tables = [t for s in sections for t in s.tables]
    written = _write_csvs(st, out_dir) if "csv" in formats else []
    if "md" in formats:
        md = tables.markdown_document(title, intro, all_tables, paragraphs)
        written.append(_write_text(out_dir / "per_center.md", md))
    if "tex" in formats:
        written.append(_write_text(out_dir / "per_center.tex", tables.tex_document(title, all_tables)))
    if "html" in formats:
        written.append(_write_text(out_dir / "report.html", html.html_document(title, intro, sections, paragraphs)))
    return written


def per_center_frame(
    results: pd.DataFrame,
    meta: StudyMeta,
    *,
    round: int | None = None,
    blind: bool = False,
    hartung_knapp: bool = False,
    tasks: Mapping[str, TaskInfo] | None = None,
) -> pd.DataFrame:
    """The per_center.csv table itself (center rows, then a pooled row per metric), without writing any file."""
    return _prepare(results, meta, round, blind, hartung_knapp, tasks)[0].per_center


def write_report(
    results: pd.DataFrame,
    out_dir: Path,
    meta: StudyMeta,
    *,
    round: int | None = None,
    formats: Sequence[str] | str = FORMATS,
    blind: bool = False,
    hartung_knapp: bool = False,
    tasks: Mapping[str, TaskInfo] | None = None,
) -> list[Path]:
    """Write per_center.csv/md/tex, arena.csv, forest_<task>.png/.svg, report.html (and rounds.csv and
    rounds_<task>.png/.svg when there is more than one round); return the paths written.

    `round` None reports the last round; `tasks` overrides or supplies task definitions by name.
    With `blind`, every output is checked for institution names and a DataError is raised on a leak.
    """
    chosen = check_formats(formats)
    st, blinder = _prepare(results, meta, round, blind, hartung_knapp, tasks)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, sections = _sections(st, out_dir)
    written += _write_documents(st, sections, out_dir, chosen)
    if blind:
        leaks = find_leaks(written, [n for n in blinder.names if n not in blinder.mapping.values()])
        if leaks:
            raise DataError(f"blinded report still names institutions in {sorted(str(p) for p in leaks)}")
    return written
