"""Figures of experiment results (seaborn on matplotlib)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

PREFERRED_AXES = ("features.sparsity", "source.d_hidden")


def _label(key: str) -> str:
    return key.split(".")[-1].replace("_", " ")


def recovery_figure(results: pd.DataFrame, axes: dict, threshold: float = 0.9) -> plt.Figure:
    """Recovered@τ and MMCS across the sweep.

    With two or more sweep axes: heatmaps over the first two (sparsity × d_hidden when both
    are swept), averaged over any others. With one axis: lines. With none: bars.
    """
    metrics = [f"recovered@{threshold:g}", "mmcs"]
    swept = sorted(axes, key=lambda k: (k not in PREFERRED_AXES, PREFERRED_AXES.index(k) if k in PREFERRED_AXES else 0))
    fig, panels = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    for panel, metric in zip(panels[0], metrics):
        if len(swept) >= 2:
            x, y = swept[0], swept[1]
            table = results.pivot_table(index=y, columns=x, values=metric, aggfunc="mean")
            sns.heatmap(table, ax=panel, vmin=0, vmax=1, annot=True, fmt=".2f", cmap="viridis",
                        cbar_kws={"label": metric})
            panel.set_xlabel(_label(x))
            panel.set_ylabel(_label(y))
            panel.invert_yaxis()
        elif len(swept) == 1:
            sns.lineplot(data=results, x=swept[0], y=metric, marker="o", ax=panel)
            panel.set_xlabel(_label(swept[0]))
            panel.set_ylim(0, 1.02)
        else:
            sns.barplot(data=results.reset_index(), x="index", y=metric, ax=panel)
            panel.set_ylim(0, 1.02)
        panel.set_title(metric)
    averaged = swept[2:]
    note = f" (mean over {', '.join(_label(k) for k in averaged)})" if averaged else ""
    fig.suptitle(f"SAE recovery of the planted features{note}")
    fig.tight_layout()
    return fig
