"""Forest plots and across-round plots (matplotlib Figure objects, Agg/SVG, no pyplot state), saved reproducibly."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Polygon

from reports.frame import POOLED, first_seen
from reports.layout import ROLE_WORDS, interval, missing, span

# Fixed salt and no dates or creator strings: the same inputs give byte-identical SVG and PNG files.
RC: dict[str, object] = {
    "svg.hashsalt": "surgfed-reports",
    "svg.fonttype": "path",
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
PNG_METADATA: dict[str, str | None] = {"Software": None}
SVG_METADATA: dict[str, str | None] = {"Date": None, "Creator": None, "Format": None, "Type": None}
ROLE_MARKERS = {"train": ("o", True), "held_out": ("s", False), "evaluate": ("^", True)}
COLORS = [f"C{i}" for i in range(10)]  # the tab10 cycle


def _style() -> contextlib.AbstractContextManager[None]:
    return matplotlib.rc_context(RC)  # type: ignore[arg-type]  # matplotlib types keys as Literal


def save_figure(fig: Figure, out_dir: Path, stem: str) -> tuple[Path, Path]:
    """The figure as STEM.png (150 dpi) and STEM.svg, with matplotlib's metadata stripped."""
    png, svg = out_dir / f"{stem}.png", out_dir / f"{stem}.svg"
    with _style():
        fig.savefig(png, format="png", dpi=150, metadata=PNG_METADATA)
        fig.savefig(svg, format="svg", metadata=SVG_METADATA)
    return png, svg


def _xlimits(values: list[float], proportion: bool) -> tuple[float, float]:
    finite = [v for v in values if not missing(v) and math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    pad = max(hi - lo, 0.02) * 0.08
    lo, hi = lo - pad, hi + pad
    return (max(lo, -0.02), min(hi, 1.02)) if proportion else (lo, hi)


def _center_row(ax: Axes, y: float, r: pd.Series, xmid: float) -> str:
    """Draws one center's CI and square; returns the text for the right-hand column."""
    if bool(r["suppressed"]):
        ax.text(xmid, y, "suppressed (not pooled)", ha="center", va="center", color="0.45", style="italic")
        return "suppressed"
    if missing(r["estimate"]):
        ax.text(xmid, y, "not released", ha="center", va="center", color="0.45", style="italic")
        return "—"
    pooled = not missing(r["weight"])
    if not (missing(r["ci_low"]) or missing(r["ci_high"])):
        ax.hlines(y, r["ci_low"], r["ci_high"], color="0.15", lw=1.2)
    size = 25 + 220 * float(r["weight"]) if pooled else 25
    ax.scatter(
        [r["estimate"]],
        [y],
        marker="s",
        s=size,
        zorder=3,
        facecolor="tab:blue" if pooled else "white",
        edgecolor="tab:blue",
    )
    return interval(r["estimate"], r["ci_low"], r["ci_high"])


def _pooled_rows(ax: Axes, pooled: pd.Series, xmid: float) -> tuple[str, str]:
    """Draws the diamond (y = 1) and the prediction interval (y = 0); returns their texts."""
    if missing(pooled["estimate"]):
        ax.text(xmid, 1, "no pooled estimate (fewer than 2 centers)", ha="center", va="center", color="0.45")
        diamond = "—"
    else:
        est, lo, hi = (float(pooled[c]) for c in ("estimate", "ci_low", "ci_high"))
        ax.add_patch(Polygon([(lo, 1), (est, 1.28), (hi, 1), (est, 0.72)], closed=True, color="tab:red", zorder=3))
        ax.axvline(est, color="tab:red", lw=0.8, ls="--", zorder=1)
        diamond = interval(est, lo, hi)
    if missing(pooled["pi_low"]):
        ax.text(xmid, 0, "no prediction interval (fewer than 3 centers)", ha="center", va="center", color="0.45")
        return diamond, "—"
    lo, hi = float(pooled["pi_low"]), float(pooled["pi_high"])
    ax.errorbar(
        [(lo + hi) / 2],
        [0],
        xerr=[[(hi - lo) / 2], [(hi - lo) / 2]],
        fmt="none",
        ecolor="tab:red",
        elinewidth=1.2,
        capsize=4,
    )
    return diamond, span(lo, hi)


def forest_figure(df: pd.DataFrame, title: str, xlabel: str, caption: str, *, proportion: bool) -> Figure:
    """Centers with their CIs (squares sized by weight), the pooled diamond and the prediction interval."""
    centers = df[df["center"] != POOLED].reset_index(drop=True)
    pooled = df[df["center"] == POOLED].iloc[0]
    n = len(centers)
    with _style():
        height = 1.9 + 0.36 * (n + 2)
        fig = Figure(figsize=(9.0, height))
        ax = fig.add_axes((0.27, 0.95 / height, 0.45, 1 - 1.6 / height))  # fixed margins in inches
        values = [
            *centers["ci_low"],
            *centers["ci_high"],
            *centers["estimate"],
            *pooled[["pi_low", "pi_high", "ci_low", "ci_high"]],
        ]
        x0, x1 = _xlimits(values, proportion)
        ax.set_xlim(x0, x1)
        xmid = (x0 + x1) / 2
        ys = [n + 1.5 - i for i in range(n)]
        texts = [_center_row(ax, y, r, xmid) for y, (_, r) in zip(ys, centers.iterrows(), strict=False)]
        texts += list(_pooled_rows(ax, pooled, xmid))
        labels = [*centers["center"], POOLED, "95% prediction interval"]
        all_y = [*ys, 1.0, 0.0]
        ax.set_yticks(all_y, labels)
        ax.set_ylim(-0.7, n + 2.2)
        ax.tick_params(axis="y", length=0)
        ax.spines["left"].set_visible(False)
        for y, text in zip(all_y, texts, strict=False):
            ax.annotate(text, (1.03, y), xycoords=("axes fraction", "data"), va="center", ha="left")
        ax.annotate(
            "Estimate (95% CI)", (1.03, n + 2.0), xycoords=("axes fraction", "data"), va="center", weight="bold"
        )
        ax.set_xlabel(xlabel)
        fig.suptitle(title, x=0.02, ha="left", weight="bold")
        fig.text(0.02, 0.02, caption, ha="left", va="bottom", fontsize=7.5, color="0.3", wrap=True)
    return fig


def rounds_figure(df: pd.DataFrame, title: str, ylabel: str, round_labels: Mapping[int, str]) -> Figure:
    """Each center's headline metric across rounds; marker shape says trainer, held-out or evaluation only."""
    rounds = sorted(int(r) for r in df["round"].unique())
    centers = first_seen(df["center"])
    with _style():
        fig = Figure(figsize=(10.0, 4.2))
        ax = fig.add_axes((0.08, 0.16, 0.5, 0.72))  # the right 40% holds the legend
        for i, center in enumerate(centers):
            _center_series(ax, df[df["center"] == center], i, len(centers))
        ax.set_xticks(rounds, [round_labels.get(r, f"Round {r}") for r in rounds])
        ax.set_xlabel("Round")
        ax.set_ylabel(ylabel)
        ax.legend(handles=_legend(df, centers), loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
        fig.suptitle(title, x=0.02, ha="left", weight="bold")
    return fig


def _center_series(ax: Axes, rows: pd.DataFrame, i: int, n: int) -> None:
    color = COLORS[i % len(COLORS)]
    shift = (i - (n - 1) / 2) * 0.05  # small horizontal offsets keep overlapping CIs readable
    ok = rows[~rows["suppressed"] & rows["estimate"].notna()].sort_values("round")
    x = [int(r) + shift for r in ok["round"]]
    ax.plot(x, ok["estimate"], color=color, lw=1.2)
    for xi, (_, r) in zip(x, ok.iterrows(), strict=False):
        marker, filled = ROLE_MARKERS.get(str(r["role"]), ("o", True))
        if not (missing(r["ci_low"]) or missing(r["ci_high"])):
            ax.vlines(xi, r["ci_low"], r["ci_high"], color=color, lw=1.0)
        ax.scatter(
            [xi],
            [r["estimate"]],
            marker=marker,
            s=36,
            zorder=3,
            edgecolor=color,
            facecolor=color if filled else "white",
        )


def _legend(df: pd.DataFrame, centers: list[str]) -> list[Line2D]:
    handles = []
    for i, center in enumerate(centers):
        roles = ", ".join(dict.fromkeys(ROLE_WORDS.get(str(r), str(r)) for r in df.loc[df["center"] == center, "role"]))
        mine = df[df["center"] == center]
        if not (~mine["suppressed"] & mine["estimate"].notna()).any():
            roles += "; nothing released"
        handles.append(Line2D([], [], color=COLORS[i % len(COLORS)], lw=1.5, label=f"{center} ({roles})"))
    for role, (marker, filled) in ROLE_MARKERS.items():
        if role in set(df["role"]):
            handles.append(
                Line2D(
                    [],
                    [],
                    ls="none",
                    marker=marker,
                    color="0.3",
                    markerfacecolor="0.3" if filled else "white",
                    label=ROLE_WORDS[role],
                )
            )
    return handles
