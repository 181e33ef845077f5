"""Figures of experiment results (seaborn on matplotlib), drawn next to the CSV that made them.

Each takes the results table (results.csv), the per-feature table (features.csv) and the
resolved config, and returns a Figure, or None where the run has nothing to show for it.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter
import numpy as np
import pandas as pd
import seaborn as sns

from . import config as config_io

X_AXES = ("features.sparsity", "features.l0", "features.zipf_exponent", "features.importance_decay")
Y_AXES = ("source.d_hidden", "sae.d_sae", "features.n_features")
HUE_AXES = ("sae.d_sae", "source.d_hidden", "sae.recipe", "features.zipf_exponent", "features.n_features")


def recipe_colours(names=()) -> dict[str, tuple]:
    """One colour per recipe, the same in every figure: tab10 in the registry's order, then `names` not in it."""
    from ..sae import RECIPES

    names = list(dict.fromkeys([*RECIPES, *names]))  # an outside recipe appears by its import path
    return dict(zip(names, sns.color_palette("tab10", max(10, len(names)))))


def _hue_palette(table: pd.DataFrame, hue: str | None):
    """Colours for the lines of one swept axis: the recipes' own, or viridis stopped short of its pale yellow end."""
    if hue == "sae.recipe":
        return recipe_colours(table[hue].dropna().unique())
    if hue is None or not pd.api.types.is_numeric_dtype(table[hue]):
        return None
    values = sorted(table[hue].dropna().unique())
    cmap = plt.get_cmap("viridis")
    return dict(zip(values, (cmap(x) for x in np.linspace(0, 0.8, len(values)))))


def _log_ticks(panel, low: float, high: float) -> None:
    """Readable tick labels on a log axis, also over less than a decade (where matplotlib labels no tick)."""
    decades = range(int(np.floor(np.log10(low))), int(np.ceil(np.log10(high))) + 1)
    for steps in ((1,), (1, 2, 5), (1, 1.5, 2, 3, 5, 7)):
        ticks = [m * 10.0**e for e in decades for m in steps if low <= m * 10.0**e <= high]
        if len(ticks) >= 3:
            break
    else:
        ticks = list(np.geomspace(low, high, 4))
    panel.xaxis.set_major_locator(FixedLocator(ticks))
    panel.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
    panel.xaxis.set_minor_formatter(NullFormatter())


def _label(key: str) -> str:
    return key.split(".")[-1].replace("_", " ")


def _titled(fig: plt.Figure, config: dict, title: str, tight: bool = True) -> plt.Figure:
    fig.suptitle(f"{config.get('name', '')}: {title}")
    if tight:
        fig.tight_layout()
    return fig


def _threshold(config: dict) -> float:
    """τ of the recovered@τ the figures show: the config's, or of a swept τ 0.9 if it is one, else the first."""
    threshold = config["evaluate"]["threshold"]
    if isinstance(threshold, list):
        return 0.9 if 0.9 in threshold else threshold[0]
    return threshold


def one_grading(results: pd.DataFrame, features: pd.DataFrame | None, config: dict):
    """The rows graded at the figures' τ when evaluate.threshold is swept: the other thresholds re-grade the same
    SAEs, so their scores (MMCS, L0, ...) are the same and their recovered@τ is another column."""
    if "evaluate.threshold" not in results or results["evaluate.threshold"].nunique() < 2:
        return results, features
    results = results[results["evaluate.threshold"] == _threshold(config)]
    if features is not None and not features.empty:
        features = features[features["key"].isin(results["key"])]
    return results, features


def _swept(results: pd.DataFrame, config: dict) -> list[str]:
    """Swept axes that actually vary in `results`, seed last."""
    keys = [k for k in config_io.axes(config) if k in results and results[k].nunique() > 1]
    return sorted(keys, key=lambda k: k == "seed")


def _recovered_column(results: pd.DataFrame, config: dict) -> str:
    name = f"recovered@{_threshold(config):g}"
    return name if name in results else next(c for c in results.columns if c.startswith("recovered@"))


def heatmap_axes(results: pd.DataFrame, config: dict) -> tuple[str | None, str | None, list[str]]:
    """(x, y, averaged): the two axes of the heatmap and the swept axes averaged over."""
    swept = [k for k in _swept(results, config) if k != "seed"]
    x = next((k for k in X_AXES if k in swept), None)
    y = next((k for k in Y_AXES if k in swept and k != x), None)
    # the recipe and its hyperparameters are the Pareto figure's business: facets or averages here
    rest = [k for k in swept if k not in (x, y) and k != "sae.recipe" and not config_io.is_hyperparameter(k)]
    if x is None and rest:
        x = rest.pop(0)
    if y is None and rest:
        y = rest.pop(0)
    averaged = [k for k in _swept(results, config) if k not in (x, y)]
    return x, y, averaged


def recovery_heatmap(results: pd.DataFrame, features: pd.DataFrame | None, config: dict) -> plt.Figure | None:
    """Recovered@τ and MMCS over two swept axes; for toy models also the fraction of features represented
    and the fraction of all planted features the SAE recovers (recovered@τ × n_graded / n_features).

    Rows of panels per recipe when the recipe is swept; other swept axes (seeds) are averaged.
    With one swept axis: lines; with none: bars; None when only the SAE (recipe, hyperparameters) varies.
    """
    recovered = _recovered_column(results, config)
    table = results.copy()
    metrics = [recovered, "mmcs"]
    if "n_represented" in table and table["n_represented"].notna().any():
        table["represented"] = table["n_represented"] / table["features.n_features"]
        table["found"] = table[recovered] * table["n_graded"] / table["features.n_features"]
        metrics += ["represented", "found"]
    x, y, averaged = heatmap_axes(table, config)
    if x is None and any(k == "sae.recipe" or config_io.is_hyperparameter(k) for k in averaged):
        return None  # only the SAE varies: see pareto_figure
    facets = [None]
    if "sae.recipe" in averaged:
        facets = list(dict.fromkeys(table["sae.recipe"]))
        averaged.remove("sae.recipe")
    wrap = 2 if len(facets) == 1 and len(metrics) == 4 else len(metrics)  # four panels read best as 2 x 2
    rows_per_facet = len(metrics) // wrap
    fig, panels = plt.subplots(len(facets) * rows_per_facet, wrap, squeeze=False,
                               figsize=(5.4 * wrap, 4 * len(facets) * rows_per_facet))
    for row, facet in enumerate(facets):
        part = table if facet is None else table[table["sae.recipe"] == facet]
        facet_panels = panels[row * rows_per_facet:(row + 1) * rows_per_facet].ravel()
        for panel, metric in zip(facet_panels, metrics):
            if x is not None and y is not None:
                grid = part.pivot_table(index=y, columns=x, values=metric, aggfunc="mean")
                sns.heatmap(grid, ax=panel, vmin=0, vmax=1, annot=True, fmt=".2f", cmap="viridis",
                            cbar_kws={"label": metric}, annot_kws={"size": 8})
                panel.set(xlabel=_label(x), ylabel=_label(y))
                panel.invert_yaxis()
            elif x is not None:
                sns.lineplot(data=part, x=x, y=metric, marker="o", ax=panel)
                panel.set(xlabel=_label(x), ylim=(-0.02, 1.02))
            else:
                sns.barplot(data=part.reset_index(), x="index", y=metric, ax=panel)
                panel.set_ylim(0, 1.02)
            title = {"represented": "features the toy model represents", "mmcs": "MMCS",
                     "found": "planted features the SAE finds (of all)",
                     recovered: f"{recovered} (of represented)" if "represented" in metrics else recovered}[metric]
            panel.set_title(title if facet is None else f"{facet}: {title}")
    note = f" (mean over {', '.join(_label(k) for k in averaged)})" if averaged else ""
    return _titled(fig, config, f"SAE recovery of the planted features{note}")


def _true_l0(results: pd.DataFrame, features: pd.DataFrame | None) -> float | None:
    """The planted features' mean L0 (Σ firing probabilities), when the whole table shares one."""
    if features is None or features.empty or "firing_prob" not in features:
        return None
    per_key = features[features["key"].isin(results["key"])].groupby("key")["firing_prob"].sum().round(6)
    return float(per_key.iloc[0]) if per_key.nunique() == 1 else None


KNOB_NAMES = {"l1_coefficient": "λ", "l0_coefficient": "λ", "k": "k", "threshold_init": "θ0"}  # pareto.png's labels


def pareto_front(l0: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Mask of the points no other point beats (none has an L0 as low or lower and a higher score): walking the
    points by increasing L0, a point is on the sparsity-fidelity frontier when it scores higher than all before it."""
    order = np.lexsort((-score, l0))  # by L0, the best score first among equal L0
    best_before = np.maximum.accumulate(np.concatenate([[-np.inf], score[order][:-1]]))
    front = np.zeros(len(l0), dtype=bool)
    front[order] = score[order] > best_before
    return front


def pareto_figure(results: pd.DataFrame, features: pd.DataFrame | None, config: dict) -> plt.Figure | None:
    """Recovered@τ and MMCS against the SAE's measured L0: every setting of each recipe, and its Pareto frontier.

    The sparsity-fidelity plot of the SAE literature (e.g. Gao et al. 2024): a recipe is better where its
    frontier lies higher at the same L0. Each point is one setting of the recipe's knobs (labelled, e.g.
    "λ 0.3"), seeds averaged. Drawn when the sweep varies the SAE, so that L0 moves; one row of panels per
    setting of the other swept axes (at most 4), so that a frontier only joins SAEs trained on the same activations.
    """
    swept = [k for k in _swept(results, config) if k != "seed"]
    sae_axes = [k for k in swept if k.startswith("sae.") and k != "sae.d_sae"]
    if "l0" not in results or not sae_axes:
        return None
    recovered = _recovered_column(results, config)
    others = [k for k in swept if k not in sae_axes]
    by = list(dict.fromkeys(["sae.recipe", *sae_axes, *others]))
    means = results.groupby(by, dropna=False)[[recovered, "mmcs", "l0"]].mean().reset_index()
    settings = _spread(list(means.groupby(others[0] if len(others) == 1 else others).groups), 4) if others else [()]
    recipes = list(dict.fromkeys(means["sae.recipe"]))
    palette = recipe_colours(recipes)
    knobs = {recipe: [k for k in sae_axes if k != "sae.recipe"
                      and means.loc[means["sae.recipe"] == recipe, k].nunique() > 1] for recipe in recipes}
    true_l0 = _true_l0(results, features)
    fig, panels = plt.subplots(len(settings), 2, figsize=(11, 3.8 * len(settings) + 0.6), squeeze=False,
                               layout="constrained")
    for row, setting in enumerate(settings):
        part = means
        setting = setting if isinstance(setting, tuple) else (setting,)
        for key, value in zip(others, setting):
            part = part[part[key] == value]
        label = ", ".join(f"{_label(k)} {v}" for k, v in zip(others, setting))
        for panel, metric in zip(panels[row], [recovered, "mmcs"]):
            for recipe in recipes:
                points = part[(part["sae.recipe"] == recipe) & part[metric].notna()].sort_values("l0")
                if points.empty:
                    continue
                front = pareto_front(points["l0"].to_numpy(), points[metric].to_numpy())
                colour = palette.get(recipe)
                panel.scatter(points["l0"], points[metric], color=colour, alpha=0.35, s=22, zorder=2)
                panel.plot(points["l0"][front], points[metric][front], marker="o", color=colour, label=recipe,
                           alpha=0.9, zorder=3)
                for _, point in points.iterrows():
                    values = ((k.split(".")[-1], point[k]) for k in knobs[recipe])
                    text = " ".join(f"{KNOB_NAMES.get(name, name)} {v if isinstance(v, str) else format(v, 'g')}"
                                    for name, v in values)
                    if text:
                        panel.annotate(text, (point["l0"], point[metric]), xytext=(3, 3), textcoords="offset points",
                                       fontsize=7, color=colour)
            if true_l0:
                panel.axvline(true_l0, color="grey", ls=":", lw=1, label="planted L0")
            if (part["l0"] > 0).all() and part["l0"].max() / part["l0"].min() > 20:
                panel.set_xscale("log")
            panel.margins(x=0.1)  # room for the knob labels
            panel.set(xlabel="SAE L0 (active latents per sample)", ylabel=metric, ylim=(-0.02, 1.05))
            panel.set_title(f"{metric} against L0" + (f" ({label})" if label else ""), fontsize=10)
            if row == 0 and metric == recovered and panel.get_legend_handles_labels()[0]:
                panel.legend(fontsize=8, title="line: Pareto frontier", title_fontsize=8)
    return _titled(fig, config, "recovery against the SAE's L0; each recipe's settings and their Pareto frontier",
                   tight=False)


def _spread(values: list, n: int) -> list:
    """At most n values, evenly spread over the sorted list, ends included."""
    values = sorted(values)
    if len(values) <= n:
        return values
    return [values[round(i * (len(values) - 1) / (n - 1))] for i in range(n)]


def feature_norm_bars(results: pd.DataFrame, features: pd.DataFrame | None, config: dict) -> plt.Figure | None:
    """Bars of ||W_i|| of every feature per toy model, coloured by Σ_{j≠i} (Ŵ_i·W_j)² (Elhage et al. 2022, "Toy
    Models of Superposition", fig. 3): dark bars have a dimension of their own, bright ones share it.

    One panel per toy model across the x axis of the heatmap (at most 6), one row per its y (at most 3); the lowest
    seed only.
    """
    if features is None or features.empty or "norm" not in features or features["norm"].isna().all():
        return None
    toy_axes = ("source.", "features.")  # axes that change the toy model (not the SAE)
    x, y = (axis if axis and axis.startswith(toy_axes) else None for axis in heatmap_axes(results, config)[:2])
    toys = results.dropna(subset=["toy_instance"]) if "toy_instance" in results else results.iloc[:0]
    if toys.empty:
        return None
    if "seed" in toys:
        toys = toys[toys["seed"] == toys["seed"].min()]
    toys = toys.drop_duplicates(["batch", "toy_instance"])
    columns = _spread(list(toys[x].unique()), 6) if x else [None]
    rows = _spread(list(toys[y].unique()), 3) if y else [None]
    row_height = max(2.4, 0.16 * (features["feature"].max() + 1) + 1.0)
    fig, panels = plt.subplots(len(rows), len(columns), squeeze=False, layout="constrained",
                               figsize=(2.3 * len(columns) + 1.2, row_height * len(rows) + 0.6))
    cmap = plt.get_cmap("viridis")
    # Σ_j≠i (Ŵ_i·W_j)² exceeds 1 wherever a feature shares its direction with more than one other's worth
    shown = features[features["key"].isin(toys["key"])]["interference"]
    colour_norm = plt.Normalize(0, max(1.0, float(np.nanmax(shown)) if len(shown) else 1.0))
    for r, y_value in enumerate(rows):
        for c, x_value in enumerate(columns):
            panel = panels[r][c]
            chosen = toys
            for axis, value in ((x, x_value), (y, y_value)):
                chosen = chosen[chosen[axis] == value] if axis else chosen
            if chosen.empty:
                panel.axis("off")
                continue
            toy = chosen.iloc[0]
            bars = features[features["key"] == toy["key"]].sort_values("feature")
            colours = cmap(colour_norm(bars["interference"].to_numpy()))
            panel.barh(bars["feature"], bars["norm"], color=colours)
            panel.axvline(0.5, color="grey", lw=0.6, ls=":")
            panel.set_ylim(bars["feature"].max() + 0.6, -0.6)  # feature 0 on top
            panel.yaxis.set_major_locator(MaxNLocator(integer=True))
            panel.set_xlim(0, max(1.2, float(features["norm"].max()) * 1.05))
            title = [f"{_label(x)} {x_value:g}" if x else "", f"{_label(y)} {y_value:g}" if y else ""]
            if "dims_per_feature" in toy:
                title.append(f"D* {toy['dims_per_feature']:.2f}")
            panel.set_title("\n".join(t for t in title if t), fontsize=9)
            panel.set(xlabel="||W_i||" if r == len(rows) - 1 else "", ylabel="feature" if c == 0 else "")
            panel.tick_params(labelsize=7)
    mappable = plt.cm.ScalarMappable(cmap=cmap, norm=colour_norm)
    fig.colorbar(mappable, ax=panels, label="Σ_j≠i (Ŵ_i·W_j)²  (superposition)", shrink=0.8)
    return _titled(fig, config, "toy-model feature norms (dotted: represented at 0.5)", tight=False)


def recovery_vs_frequency(results: pd.DataFrame, features: pd.DataFrame | None, config: dict) -> plt.Figure | None:
    """Matched cosine and fraction recovered against each feature's firing probability (8 log bins).

    One line per value of the most telling swept axis (d_sae first); graded features only.
    """
    if features is None or features.empty or "firing_prob" not in features or "matched_cos" not in features:
        return None
    table = features[features["firing_prob"] > 0]
    if "graded" in table:
        table = table[table["graded"].astype(bool)]
    if table["firing_prob"].nunique() < 2:
        return None
    swept = _swept(results, config)
    hue = next((k for k in HUE_AXES if k in swept), None)
    if hue:
        table = table.merge(results[["key", hue]], on="key", how="left")
    n_bins = 8
    edges = np.geomspace(table["firing_prob"].min(), table["firing_prob"].max() * 1.0001, n_bins + 1)
    centres = np.sqrt(edges[:-1] * edges[1:])
    table = table.assign(frequency=centres[np.clip(np.digitize(table["firing_prob"], edges) - 1, 0, n_bins - 1)])
    metrics = [("matched_cos", "matched cosine")]
    if "recovered" in table:
        table["recovered"] = table["recovered"].astype(float)
        metrics.append(("recovered", f"fraction recovered at {_threshold(config):g}"))
    fig, panels = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    for panel, (metric, label) in zip(panels[0], metrics):
        sns.lineplot(data=table, x="frequency", y=metric, hue=hue, marker="o", ax=panel, errorbar=None,
                     palette=_hue_palette(table, hue))
        panel.set_xscale("log")
        _log_ticks(panel, float(table["frequency"].min()), float(table["frequency"].max()))
        panel.set(ylim=(-0.02, 1.02), xlabel="feature firing probability", ylabel=label)
        if hue and panel.get_legend() is not None:
            panel.get_legend().set_title(_label(hue))
    return _titled(fig, config, "recovery against feature frequency")


def recovery_over_training(results: pd.DataFrame, features: pd.DataFrame | None, config: dict) -> plt.Figure | None:
    """recovered@0.9 against samples seen, one line per recipe (mean over its configurations), from the
    snapshots a run with `sae.snapshots = n` records."""
    if "snapshots" not in results or results["snapshots"].isna().all():
        return None
    curves = pd.concat([pd.read_json(io.StringIO(text)).assign(recipe=recipe) for text, recipe
                        in zip(results["snapshots"], results["sae.recipe"]) if isinstance(text, str)])
    fig, panel = plt.subplots(figsize=(5.5, 4))
    sns.lineplot(data=curves, x="samples_seen", y="recovered@0.9", hue="recipe", marker="o", ax=panel,
                 errorbar=None, palette=recipe_colours())
    panel.set(ylim=(-0.02, 1.02), xlabel="samples seen", ylabel="recovered@0.9 (snapshot)")
    return _titled(fig, config, "recovery over training")


FIGURES = {
    "recovery_heatmap.png": recovery_heatmap,
    "pareto.png": pareto_figure,
    "feature_norms.png": feature_norm_bars,
    "recovery_vs_frequency.png": recovery_vs_frequency,
    "recovery_over_training.png": recovery_over_training,
}


def draw_figures(run_dir, results: pd.DataFrame | None = None, features: pd.DataFrame | None = None,
                 config: dict | None = None, dpi: int = 120) -> list[Path]:
    """Draw every figure that applies into `run_dir` (next to results.csv); returns the paths written."""
    from .store import RunStore

    store = RunStore(run_dir)
    config = config if config is not None else store.read_config()
    results = results if results is not None else store.results()
    features = features if features is not None else store.features()
    results, features = one_grading(results, features, config)
    written = []
    if results.empty:
        return written
    for name, draw in FIGURES.items():
        figure = draw(results, features, config)
        if figure is None:
            continue
        path = Path(run_dir) / name
        figure.savefig(path, dpi=dpi, bbox_inches="tight")
        plt.close(figure)
        written.append(path)
    return written
