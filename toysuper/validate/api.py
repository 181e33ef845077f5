"""`validate`: grade one recipe on the suite, beside the seven built-ins, in a resumable run folder.

Only the new recipe trains. The built-ins' rows ship with the package (baselines/<size>.csv, written by
`python -m toysuper.validate.baselines`) and are reused where their key matches (a row is pure in its
key, run.row_key); any other row trains here, and `baselines="rerun"` trains them all again.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pandas as pd

from ..devices import resolve_device
from . import leaderboard
from .run import AT, label, row_key, run_row, size_of, split_settings
from .suite import SIZES, SUITE_VERSION, TASKS, listing

BUILT_INS = ("anthropic_2024", "relu_l1", "topk", "batchtopk", "jumprelu", "gated", "matryoshka")
KEY_COLUMNS = ["suite_version", "size", "task", "recipe", "settings", "at", "device"]


def shipped(size: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The shipped baseline rows and snapshots of a named size (empty frames if none ship)."""
    folder = resources.files(__package__) / "baselines"
    paths = [folder / f"{size}.csv", folder / f"{size}_snapshots.csv"]
    return tuple(pd.read_csv(path, dtype={"settings": str, "size": str}) if size in SIZES and path.is_file()
                 else pd.DataFrame() for path in paths)


def _lookup(rows: pd.DataFrame, snapshots: pd.DataFrame, key: dict):
    """The shipped row and snapshots of `key`, or None."""
    if rows.empty:
        return None
    found = rows[(rows[KEY_COLUMNS] == pd.Series(key)).all(axis=1)]
    if found.empty:
        return None
    row = found.iloc[0].to_dict()
    return row, snapshots[(snapshots["task"] == key["task"]) & (snapshots["label"] == row["label"])]


def validate(recipe: str, suite="smoke", *, settings: dict | None = None, out=None, baselines: str = "shipped",
             device=None, at: str = "matched", tasks=None, recipes=BUILT_INS, quiet: bool = False) -> pd.DataFrame:
    """Train `recipe` on every task of the suite and rank it against `recipes` (leaderboard.table).

    `suite`: a name of suite.SIZES or a suite.Size; `settings`: the recipe's hyperparameters and train_sae
    settings; `out`: the run folder (default validate-RECIPE-SUITE), which a rerun resumes; `baselines`:
    "shipped" reuses the shipped rows whose key matches, "rerun" trains them here; `at`: "matched" (every
    recipe at the task's L0) or "defaults". Writes leaderboard.csv / .md, heatmap.png and curves.png.
    """
    settings = dict(settings or {})
    split_settings(recipe, settings)  # every bad input is named before anything is written
    size_of(suite)
    if baselines not in ("shipped", "rerun"):
        raise ValueError(f"baselines must be 'shipped' or 'rerun', got {baselines!r}")
    if at not in AT:
        raise ValueError(f"at must be one of {list(AT)}, got {at!r}")
    tasks = list(TASKS) if tasks is None else list(tasks)
    unknown = [task for task in tasks if task not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"tasks must be a non-empty subset of {list(TASKS)}, got {tasks!r}")
    for name in recipes:
        split_settings(name, {})
    device = resolve_device(device)
    short = suite if isinstance(suite, str) else "custom"
    folder = Path(out or f"validate-{label(recipe, settings).replace(':', '.')}-{short}")
    reuse = shipped(size_of(suite)[0]) if baselines == "shipped" else (pd.DataFrame(), pd.DataFrame())
    rows, snapshots = [], []
    for task in tasks:
        keys = [row_key(task, recipe, settings, suite, at, device)]
        keys += [key for key in (row_key(task, name, {}, suite, at, device) for name in recipes) if key != keys[0]]
        for number, key in enumerate(keys):
            found = _lookup(*reuse, key) if number > 0 else None
            if not quiet:
                print(f"{task}: {key['recipe']}" + (" (shipped)" if found else ""), flush=True)
            row, snaps = found if found else run_row(folder, key, device)
            rows.append(row)
            snapshots.append(snaps)
    title = f"toysuper validate {label(recipe, settings)} (suite {short} v{SUITE_VERSION}, at {at})"
    return leaderboard.write(folder, pd.DataFrame(rows), pd.concat(snapshots, ignore_index=True), title)


def command(args) -> int:
    """`toysuper validate` (sweep/cli.py)."""
    if args.list:
        print(listing())
        return 0
    if args.recipe is None:
        raise ValueError("give a RECIPE to validate (a name or module:Class), or --list")
    settings = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
        try:
            settings[name.strip()] = json.loads(value)
        except json.JSONDecodeError:  # a plain word, e.g. --set b_dec_init=mean
            settings[name.strip()] = value
    board = validate(args.recipe, args.suite, settings=settings, out=args.out, baselines=args.baselines,
                     device=args.device, at=args.at, quiet=args.quiet)
    print(leaderboard.overall(board).to_string(float_format=lambda v: f"{v:.3f}"))
    return 0
