"""GRPO reward statistics per round and center: a tidy CSV and one panel per reward component."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from reports.plots import COLORS, _style, save_figure

REWARD_COLUMNS = ("round", "center", "component", "value")


def rewards_frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    """Rows of (round, center, component, value) as a frame sorted by round, center and component."""
    frame = pd.DataFrame(rows, columns=list(REWARD_COLUMNS))
    return frame.sort_values(["round", "center", "component"], kind="stable").reset_index(drop=True)


def rewards_figure(frame: pd.DataFrame, title: str) -> Figure:
    """One panel per component (mean reward per completion, share of zero-spread groups, KL, clipping), a line
    per trainer across rounds."""
    components = list(dict.fromkeys(frame["component"]))
    centers = list(dict.fromkeys(frame["center"]))
    with _style():
        fig = Figure(figsize=(3.0 * len(components), 2.8), layout="constrained")
        axes = fig.subplots(1, len(components), squeeze=False)[0]
        for ax, component in zip(axes, components, strict=True):
            rows = frame[frame["component"] == component]
            for i, center in enumerate(centers):
                mine = rows[rows["center"] == center]
                ax.plot(mine["round"], mine["value"], marker="o", color=COLORS[i % len(COLORS)], label=center)
            ax.set_title(component)
            ax.set_xlabel("round")
            ax.set_xticks(sorted(set(frame["round"])))
        axes[0].legend(fontsize=7)
        fig.suptitle(title)
    return fig


def write_rewards(frame: pd.DataFrame, out_dir: Path, title: str) -> list[Path]:
    """rewards.csv and rewards.png/.svg in `out_dir`; nothing when the frame is empty."""
    if frame.empty:
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv = out_dir / "rewards.csv"
    frame.to_csv(csv, index=False, lineterminator="\n")
    return [csv, *save_figure(rewards_figure(frame, title), out_dir, "rewards")]
