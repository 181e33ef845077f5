"""The leaderboard of a validation run: the table, one overall rank (RANK_RULE), a heatmap, recovery over
training."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..sweep.store import atomic_write  # noqa: E402
from .run import L0_TOLERANCE, METRICS  # noqa: E402

RANK_RULE = ("mean over tasks of the recipe's rank on the task by recovered@0.9 (higher first), "
             "ties broken by MMCS (higher first); 1 is best")
COLUMNS = ["task", "label", *METRICS, "target_l0", "l0_missed", "wall_s"]
MISSED = "†"


def table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, recipe) with COLUMNS plus `rank` (its rank on the task) and `overall_rank`."""
    rows = rows[COLUMNS].copy()
    order = rows.sort_values(["task", "recovered@0.9", "mmcs"], ascending=[True, False, False])
    rows["rank"] = order.groupby("task").cumcount().add(1).reindex(rows.index)
    rows["overall_rank"] = rows["label"].map(rows.groupby("label")["rank"].mean())
    return rows.reset_index(drop=True)


def overall(board: pd.DataFrame) -> pd.DataFrame:
    """Per recipe: mean rank, tasks won, mean recovered@0.9, L0 misses; best first."""
    grouped = board.groupby("label")
    return pd.DataFrame({"mean_rank": grouped["rank"].mean(),
                         "tasks_won": grouped["rank"].apply(lambda r: (r == 1).sum()),
                         "mean_recovered@0.9": grouped["recovered@0.9"].mean(),
                         "l0_misses": grouped["l0_missed"].sum()}).sort_values("mean_rank")


def _markdown(frame: pd.DataFrame) -> str:
    cells = frame.reset_index().astype(object).map(lambda v: f"{v:.3f}" if isinstance(v, float) else str(v))
    lines = ["| " + " | ".join(cells.columns) + " |", "|" + "---|" * len(cells.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells.to_numpy().tolist()])


def recovery_grid(board: pd.DataFrame, marked: bool = False) -> pd.DataFrame:
    """recovered@0.9, tasks × recipes (recipes in overall order); as text with † on L0 misses if `marked`."""
    recipes = overall(board).index
    grid = board.pivot(index="task", columns="label", values="recovered@0.9").reindex(columns=recipes)
    if not marked:
        return grid
    missed = board.pivot(index="task", columns="label", values="l0_missed").reindex(columns=recipes)
    return grid.map(lambda v: f"{v:.3f}") + missed.map(lambda m: f" {MISSED}" if m is True else "")


def markdown(board: pd.DataFrame, title: str) -> str:
    return "\n\n".join([
        f"# {title}", f"Overall rank: {RANK_RULE}.", _markdown(overall(board)),
        f"## recovered@0.9 per task\n\n{MISSED}: the L0 reached missed the task's target by more than "
        f"{L0_TOLERANCE:.0%} (see l0 and target_l0 in leaderboard.csv).", _markdown(recovery_grid(board, True)),
        "## Every row", _markdown(board.set_index(["task", "label"]))]) + "\n"


def heatmap(board: pd.DataFrame, path: Path, title: str) -> None:
    """recovered@0.9, tasks × recipes, annotated; † marks an L0 miss."""
    grid, text = recovery_grid(board), recovery_grid(board, marked=True)
    figure, axes = plt.subplots(figsize=(1.3 * len(grid.columns) + 3, 0.5 * len(grid.index) + 2))
    image = axes.imshow(grid.to_numpy(dtype=float), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    axes.set_xticks(np.arange(len(grid.columns)), grid.columns, rotation=35, ha="right")
    axes.set_yticks(np.arange(len(grid.index)), grid.index)
    for (i, j), value in np.ndenumerate(grid.to_numpy(dtype=float)):
        axes.text(j, i, text.iat[i, j], ha="center", va="center", fontsize=8,
                  color="black" if value > 0.6 else "white")
    figure.colorbar(image, ax=axes, label="recovered@0.9")
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def curves(snapshots: pd.DataFrame, path: Path, title: str) -> None:
    """Per task a panel: recovered@0.9 against samples seen, one line per recipe (SynthSAEBench: its MCC, since
    almost nothing there reaches cosine 0.9)."""
    tasks = list(dict.fromkeys(snapshots["task"]))
    columns = min(4, len(tasks))
    rows = (len(tasks) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, squeeze=False, figsize=(3.6 * columns, 2.8 * rows))
    for panel, task in zip(axes.flat, tasks):
        metric = "sb_mcc" if task == "synthsaebench" else "recovered@0.9"
        for name, group in snapshots[snapshots["task"] == task].groupby("label", sort=False):
            panel.plot(group["samples_seen"], group[metric], marker=".", label=name)
        panel.set(title=task, xlabel="samples seen", ylabel=metric, ylim=(-0.05, 1.05))
    for panel in list(axes.flat)[len(tasks):]:
        panel.axis("off")
    axes.flat[0].legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write(folder: Path, rows: pd.DataFrame, snapshots: pd.DataFrame, title: str) -> pd.DataFrame:
    """leaderboard.csv, leaderboard.md, heatmap.png and curves.png in `folder`; returns the table."""
    board = table(rows)
    atomic_write(folder / "leaderboard.csv", board.to_csv(index=False))
    atomic_write(folder / "leaderboard.md", markdown(board, title))
    heatmap(board, folder / "heatmap.png", title)
    curves(snapshots, folder / "curves.png", title + ": recovery over training")
    return board
