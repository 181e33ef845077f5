"""toysuper validate (issue 25): the suite, resumable rows, shipped baselines, the L0 mark, snapshots."""

import io
import json

import pandas as pd
import pytest

import toysuper as ts
from toysuper.sae import snapshots as snapshot_module
from toysuper.sweep.cli import main as cli_main
from toysuper.validate import api, leaderboard, run
from toysuper.validate.suite import SUITE_VERSION, TASKS, Size, listing

TINY = Size(samples=2_048, batch_size=256, n_eval=512, snapshot_eval=256, synth_world=(256, 16, 64),
            synth_samples=2_048)
TASKS_USED = ["packed", "absorption"]
BASELINES = ("topk",)
NUMBERS = [m for m in run.METRICS if m != "parent_miss"] + ["target_l0", "l0_missed"]


def tiny(out, **kwargs):
    return api.validate("relu_l1", TINY, out=out, tasks=TASKS_USED, recipes=BASELINES, device="cpu", quiet=True,
                        **kwargs)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("validate")
    return out, tiny(out)


def test_listing_names_every_task_and_the_version(capsys):
    assert cli_main(["validate", "--list"]) == 0
    text = capsys.readouterr().out
    assert f"v{SUITE_VERSION}" in text and text == listing() + "\n"
    assert all(name in text for name in TASKS)
    key = run.row_key("packed", "topk", {}, "smoke", "matched", "cpu")
    assert key["suite_version"] == SUITE_VERSION
    assert run.row_path("x", key) != run.row_path("x", {**key, "suite_version": SUITE_VERSION + 1})


def test_tiny_run_writes_the_leaderboard(first_run):
    out, board = first_run
    for name in ("leaderboard.csv", "leaderboard.md", "heatmap.png", "curves.png"):
        assert (out / name).stat().st_size > 0
    assert len(board) == len(TASKS_USED) * (1 + len(BASELINES))
    assert sorted(board["label"].unique()) == sorted(["relu_l1", *BASELINES])
    for _, task in board.groupby("task"):  # ranked by recovered@0.9, then MMCS
        ordered = task.sort_values("rank")
        assert list(ordered["rank"]) == [1, 2]
        assert list(ordered["recovered@0.9"]) == sorted(ordered["recovered@0.9"], reverse=True)
    assert board.groupby("label")["rank"].mean().to_dict() == board.set_index("label")["overall_rank"].to_dict()
    assert pd.read_csv(out / "leaderboard.csv")["label"].tolist() == board["label"].tolist()
    topk = board.query("label == 'topk'")
    assert ((topk["l0"] - topk["target_l0"]).abs() < 0.5).all() and (board["target_l0"] > 0).all()  # matched L0


def test_an_interrupted_run_resumes_to_the_same_table(first_run, tmp_path, monkeypatch):
    _, board = first_run
    trained = []
    real = run.train_row

    def once_then_fail(key, device):
        if trained:
            raise KeyboardInterrupt
        trained.append(key)
        return real(key, device)

    monkeypatch.setattr(run, "train_row", once_then_fail)
    with pytest.raises(KeyboardInterrupt):
        tiny(tmp_path)
    assert len(list((tmp_path / "rows").glob("*.json"))) == 1  # the finished row, nothing of the one in flight
    counted = []
    monkeypatch.setattr(run, "train_row", lambda key, device: counted.append(key) or real(key, device))
    resumed = tiny(tmp_path)
    assert len(counted) == len(board) - 1 and trained[0] not in counted
    pd.testing.assert_frame_equal(resumed[["task", "label", *NUMBERS]], board[["task", "label", *NUMBERS]])
    counted.clear()
    tiny(tmp_path)  # everything done: nothing trains
    assert counted == []


def test_shipped_rows_equal_a_rerun(first_run, tmp_path, monkeypatch):
    out, board = first_run
    rows = [json.loads(p.read_text()) for p in (out / "rows").glob("*.json")]
    shipped = pd.DataFrame([r["row"] for r in rows if r["row"]["recipe"] in BASELINES])
    snaps = pd.concat([pd.DataFrame(r["snapshots"]) for r in rows], ignore_index=True)
    csv = tmp_path / "shipped.csv"
    shipped.to_csv(csv, index=False)  # through a CSV, as the package ships them
    monkeypatch.setattr(api, "shipped", lambda size: (pd.read_csv(csv, dtype={"settings": str, "size": str}), snaps))
    trained = []
    real = run.train_row
    monkeypatch.setattr(run, "train_row", lambda key, device: trained.append(key["recipe"]) or real(key, device))
    reused = tiny(tmp_path / "reused")
    assert trained == ["relu_l1"] * len(TASKS_USED)  # only the new recipe trains
    rerun = tiny(tmp_path / "rerun", baselines="rerun")
    assert sorted(trained[len(TASKS_USED):]) == sorted(["relu_l1", *BASELINES] * len(TASKS_USED))
    pd.testing.assert_frame_equal(reused[["task", "label", *NUMBERS]], rerun[["task", "label", *NUMBERS]])


def test_an_l0_miss_is_marked(first_run):
    assert run.l0_missed(11.1, 10.0) and run.l0_missed(8.9, 10.0)
    assert not run.l0_missed(10.9, 10.0) and not run.l0_missed(3.0, float("nan"))
    _, board = first_run
    rows = board.copy()
    rows.loc[0, "l0_missed"] = True
    others = rows.loc[1:, "l0_missed"].sum()
    grid = leaderboard.recovery_grid(rows, marked=True)
    assert grid.map(lambda cell: leaderboard.MISSED in cell).to_numpy().sum() == 1 + others
    assert grid.loc[rows.loc[0, "task"], rows.loc[0, "label"]].endswith(leaderboard.MISSED)
    assert leaderboard.MISSED in leaderboard.markdown(rows, "t")


def test_bad_input_is_named_before_anything_is_written(tmp_path):
    for kwargs, word in (({"suite": "huge"}, "suite"), ({"baselines": "some"}, "baselines"),
                         ({"at": "low"}, "at"), ({"tasks": ["nope"]}, "tasks"),
                         ({"settings": {"kk": 3}}, "kk")):
        with pytest.raises(ValueError, match=word):
            api.validate("topk", out=tmp_path / "run", **kwargs)
    with pytest.raises(ValueError, match="recipe"):
        api.validate("no_such_recipe", out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_snapshots_read_back_only_at_their_steps_and_match_a_final_evaluate(monkeypatch):
    source = ts.DictionarySource(ts.random_directions(48, 16, seed=0)[0], ts.FeatureDistribution(48, 3 / 48))
    calls = []
    real = snapshot_module.evaluate
    monkeypatch.setattr(snapshot_module, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    sae = ts.SAE(16, 48, recipe="anthropic_2024", seed=0)  # scales its inputs: snapshots must undo the scale
    result = ts.train_sae(sae, source, steps=40, batch_size=128, quiet=True, snapshots=4, snapshot_samples=512)
    assert len(calls) == 4
    frame = result.snapshots
    assert frame["step"].tolist() == [9, 19, 29, 39] and frame["samples_seen"].tolist() == [1280, 2560, 3840, 5120]
    final = ts.evaluate(sae, source, n_samples=512, quiet=True).summary.iloc[0]
    last = frame.iloc[-1]
    for name in ("recovered@0.9", "mmcs", "l0", "dead_fraction", "sb_mcc"):
        assert last[name] == pytest.approx(final[name], abs=1e-4), name
    assert frame["mmcs"].iloc[0] != pytest.approx(last["mmcs"], abs=1e-3)  # it moved over training
    assert ts.train_sae(ts.SAE(16, 48, seed=0), source, steps=5, quiet=True).snapshots is None
    with pytest.raises(ValueError, match="snapshots"):
        ts.train_sae(ts.SAE(16, 48, seed=0), source, steps=5, quiet=True, snapshots=-1)


SWEEP = """
name = "snap"
[features]
n_features = 16
l0 = 2.0
[source]
kind = "dictionary"
d_hidden = 8
[sae]
recipe = ["topk", "relu_l1"]
d_sae = 16
steps = 60
batch_size = 128
snapshots = 3
[evaluate]
n_samples = 512
"""


def test_a_sweep_records_snapshots_and_draws_recovery_over_training(tmp_path):
    (tmp_path / "snap.toml").write_text(SWEEP)
    assert cli_main(["run", str(tmp_path / "snap.toml"), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    results = pd.read_csv(tmp_path / "run" / "results.csv")
    for text in results["snapshots"]:
        snaps = pd.read_json(io.StringIO(text))
        assert snaps["step"].tolist() == [19, 39, 59] and snaps["samples_seen"].tolist() == [2560, 5120, 7680]
    assert (tmp_path / "run" / "recovery_over_training.png").stat().st_size > 0
