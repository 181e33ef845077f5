"""The figures, on hand-made tables: each shows the numbers it is given, and only where they apply."""

import itertools

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from toysuper.sweep import config as config_io
from toysuper.sweep.plots import draw_figures, feature_norm_bars, pareto_figure, recovery_heatmap, recovery_vs_frequency

SPARSITY, WIDTH, SEEDS = [0.5, 0.9, 0.99], [2, 5], [0, 1]


def _table():
    config = config_io.resolve({"seed": SEEDS, "features": {"n_features": 4, "sparsity": SPARSITY},
                                "source": {"d_hidden": WIDTH}})
    rows, features = [], []
    for i, (seed, s, d) in enumerate(itertools.product(SEEDS, SPARSITY, WIDTH)):
        key = f"k{i}"
        rows.append({"key": key, "batch": f"b{d}", "toy_instance": SPARSITY.index(s) + 3 * seed, "seed": seed,
                     "features.sparsity": s, "source.d_hidden": d, "features.n_features": 4,
                     "sae.recipe": "anthropic_2024", "n_graded": 2 + seed, "n_represented": 2 + seed,
                     "dims_per_feature": 0.5, "recovered@0.9": s * d / 10 + seed / 100, "mmcs": 1 - s / 10,
                     "l0": 1.0})
        for f in range(4):
            features.append({"key": key, "feature": f, "firing_prob": (1 - s) / (f + 1), "graded": True,
                             "matched_cos": 0.9, "recovered": True, "norm": 1.0 / (f + 1), "interference": 0.1 * f})
    return pd.DataFrame(rows), pd.DataFrame(features), config


def test_heatmap_shows_the_mean_over_seeds_of_each_cell():
    results, features, config = _table()
    fig = recovery_heatmap(results, features, config)
    recovered = fig.axes[0]
    shown = sorted(float(t.get_text()) for t in recovered.texts)
    expected = sorted(round(s * d / 10 + 0.005, 2) for s, d in itertools.product(SPARSITY, WIDTH))
    assert np.allclose(shown, expected, atol=0.006)
    titles = [a.get_title() for a in fig.axes if a.get_title()]
    assert any("represents" in t for t in titles) and any("finds" in t for t in titles)
    assert "mean over seed" in fig._suptitle.get_text()
    plt.close(fig)


def test_figures_appear_only_where_they_apply(tmp_path):
    results, features, config = _table()
    assert pareto_figure(results, features, config) is None  # the SAE is not varied: L0 moves for other reasons
    swept = config_io.resolve(config, ["sae.l1_coefficient=[0.1, 1.0]"])
    with_lambda = pd.concat([results.assign(**{"sae.l1_coefficient": v}) for v in (0.1, 1.0)], ignore_index=True)
    figure = pareto_figure(with_lambda, features, swept)
    assert figure is not None
    plt.close(figure)
    figure = feature_norm_bars(results, features, config)
    assert len([a for a in figure.axes if a.patches]) == 6  # 3 sparsities x 2 widths, seed 0 only
    plt.close(figure)
    assert feature_norm_bars(results, features.drop(columns="norm"), config) is None  # a dictionary source
    one_frequency = features.assign(firing_prob=0.1)
    assert recovery_vs_frequency(results, one_frequency, config) is None
    written = draw_figures(tmp_path, results=results, features=features, config=config)
    assert sorted(p.name for p in written) == ["feature_norms.png", "recovery_heatmap.png",
                                               "recovery_vs_frequency.png"]


def test_pareto_draws_each_recipes_frontier_and_labels_its_knobs():
    config = config_io.resolve({"sae": {"recipe": ["relu_l1", "topk"], "l1_coefficient": [0.1, 0.3, 1.0],
                                        "k": [2, 4, 8]}, "features": {"n_features": 4}})
    rows = [{"key": "a", "sae.recipe": "relu_l1", "sae.l1_coefficient": 0.1, "l0": 6.0, "mmcs": 0.5},
            {"key": "b", "sae.recipe": "relu_l1", "sae.l1_coefficient": 0.3, "l0": 3.0, "mmcs": 0.7},
            {"key": "e", "sae.recipe": "relu_l1", "sae.l1_coefficient": 1.0, "l0": 1.5, "mmcs": 0.9},
            {"key": "c", "sae.recipe": "topk", "sae.k": 2, "l0": 2.0, "mmcs": 0.6},
            {"key": "d", "sae.recipe": "topk", "sae.k": 4, "l0": 4.0, "mmcs": 0.8},
            {"key": "f", "sae.recipe": "topk", "sae.k": 8, "l0": 8.0, "mmcs": 0.4}]
    results = pd.DataFrame(rows).assign(**{"recovered@0.9": lambda t: t["mmcs"] - 0.1})
    features = pd.DataFrame({"key": list("aabbeeccddff"), "feature": [0, 1] * 6, "firing_prob": 0.75})
    fig = pareto_figure(results, features, config)
    mmcs_panel = fig.axes[1]
    lines = {line.get_label(): line for line in mmcs_panel.lines}
    # relu_l1's λ = 1 beats the others (lower L0, higher MMCS): its frontier is that one point
    assert list(lines["relu_l1"].get_xdata()) == [1.5] and list(lines["relu_l1"].get_ydata()) == [0.9]
    # topk's k = 8 is beaten by k = 4 (lower L0, higher MMCS); k = 2 and k = 4 trade L0 against MMCS
    assert list(lines["topk"].get_xdata()) == [2.0, 4.0] and list(lines["topk"].get_ydata()) == [0.6, 0.8]
    assert list(lines["planted L0"].get_xdata()) == [1.5, 1.5]  # two features firing with p = 0.75 each
    # every setting is drawn and labelled with its knob, the beaten ones too
    assert sum(len(c.get_offsets()) for c in mmcs_panel.collections) == 6
    labels = sorted(t.get_text() for t in mmcs_panel.texts)
    assert labels == ["k 2", "k 4", "k 8", "λ 0.1", "λ 0.3", "λ 1"]
    assert recovery_heatmap(results, features, config) is None  # only the SAE varies
    # one colour per recipe, the same in recovery_vs_frequency
    features = pd.DataFrame({"key": np.repeat(list("abecdf"), 2), "feature": [0, 1] * 6,
                             "firing_prob": [0.1, 0.3] * 6, "matched_cos": 0.8, "recovered": True})
    frequency = recovery_vs_frequency(results, features, config)
    colours = {line.get_label(): line.get_color() for line in frequency.axes[0].lines if not line.get_label().startswith("_")}
    assert set(colours) == {"relu_l1", "topk"}
    for recipe in ("relu_l1", "topk"):
        assert matplotlib.colors.same_color(colours[recipe], lines[recipe].get_color())
    plt.close(fig)
    plt.close(frequency)


def test_recovery_vs_frequency_labels_a_narrow_range_and_keeps_lines_visible():
    results, features, config = _table()
    narrow = features.assign(firing_prob=0.1 + 0.01 * features["feature"])  # 0.10 to 0.13: not a decade
    fig = recovery_vs_frequency(results, narrow, config)
    for panel in fig.axes:
        fig.canvas.draw()
        shown = [t.get_text() for t in panel.get_xticklabels() if t.get_text()]
        assert len(shown) >= 3, shown
        for line in panel.lines:
            if line.get_label().startswith("_"):
                continue
            r, g, b, _ = matplotlib.colors.to_rgba(line.get_color())
            assert 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.75  # no pale yellow on white
    plt.close(fig)


def test_feature_norm_colour_bar_covers_every_value():
    results, features, config = _table()
    features = features.assign(interference=0.8 * features["feature"])  # up to 2.4, past the old bar's end at 1
    fig = feature_norm_bars(results, features, config)
    colour_bar = fig.axes[-1]
    assert colour_bar.get_ylim()[1] >= 2.4
    plt.close(fig)


def test_figures_show_one_threshold_of_a_swept_threshold():
    from toysuper.sweep.plots import one_grading

    results, features, config = _table()
    swept = config_io.resolve(config, ["evaluate.threshold=[0.8, 0.9]"])
    graded = pd.concat([results.assign(**{"evaluate.threshold": 0.9}),
                        results.assign(**{"evaluate.threshold": 0.8, "key": results["key"] + "x"})], ignore_index=True)
    both = pd.concat([features, features.assign(key=features["key"] + "x")], ignore_index=True)
    shown, shown_features = one_grading(graded, both, swept)
    assert (shown["evaluate.threshold"] == 0.9).all() and len(shown) == len(results)
    assert set(shown_features["key"]) == set(results["key"])
