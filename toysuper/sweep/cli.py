"""The `toysuper` command: run an experiment, re-draw a run's figures, list what plugs in."""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import warnings
from pathlib import Path

import pandas as pd
import torch

from . import config as config_io
from ..grade.evaluate import evaluate
from ..sae import RECIPES, SAE
from ..sources import DictionarySource
from ..toy.model import KINDS as TOY_MODEL_KINDS
from ..truth.distribution import FeatureDistribution
from ..truth.magnitudes import MAGNITUDES
from ..validate.api import command as command_validate
from .experiments import default_run_dir, dry_run, finished, order_rows, run
from .store import RunStore

SUMMARY_COLUMNS = ["n_graded", "n_represented", "dims_per_feature", "RECOVERED", "mmcs", "hungarian_cos",
                   "activation_mcc", "fvu", "l0", "dead_fraction"]


def summary_table(results: pd.DataFrame, config: dict) -> str:
    """One line per configuration (averaged over seeds when seeds are swept): its axes and main scores."""
    sweep = [k for k in config_io.axes(config) if k in results]
    thresholds = config["evaluate"]["threshold"]
    recovered = [f"recovered@{t:g}" for t in (thresholds if isinstance(thresholds, list) else [thresholds])]
    metrics = [m for c in SUMMARY_COLUMNS for m in (recovered if c == "RECOVERED" else [c])]
    metrics = [c for c in metrics if c in results and results[c].notna().any()]
    table, note = results, ""
    if "seed" in sweep and results["seed"].nunique() > 1:
        sweep.remove("seed")
        table = results.groupby(sweep, sort=False, dropna=False)[metrics].mean().reset_index() if sweep else \
            results[metrics].mean().to_frame().T
        note = f"(mean over {results['seed'].nunique()} seeds)\n"
    short = [k.split(".")[-1] for k in sweep]
    names = {k: (s if short.count(s) == 1 else k) for k, s in zip(sweep, short)}
    shown = table[sweep + metrics].rename(columns=names)
    return note + shown.to_string(index=False, float_format=lambda v: f"{v:.3f}" if abs(v) < 1e4 else f"{v:.3g}")


def failure_lines(results: pd.DataFrame, config: dict, limit: int = 20) -> list[str]:
    """The configurations whose last try failed: their swept keys and the reason (empty when none failed)."""
    if results.empty or "status" not in results:
        return []
    failed = results[results["status"].notna() & (results["status"] != "ok")]
    if failed.empty:
        return []
    sweep = [k for k in config_io.axes(config) if k in failed]
    lines = [f"{len(failed)} configuration(s) failed; the same command again retries them:"]
    for _, row in failed.head(limit).iterrows():
        where = ", ".join(f"{k.split('.')[-1]}={row[k]}" for k in sweep) or row["key"]
        lines.append(f"  {where} (key {row['key']}): {row['error']}")
    if len(failed) > limit:
        lines.append(f"  ... and {len(failed) - limit} more (the status and error columns of results.csv)")
    return lines


def command_run(args) -> int:
    overrides = list(args.set) + ([f"run.executor={args.executor}"] if args.executor else [])
    config = config_io.load(args.config, overrides)
    if args.device is not None:
        config_io.check_device("device", args.device)
    if args.out is not None and not args.out.strip():
        raise ValueError(f"--out must name a folder, got {args.out!r} (leave it out for runs/NAME-KEY)")
    if args.dry_run:
        print(dry_run(config, args.out, device=args.device))
        return 0
    out_dir = Path(args.out) if args.out else default_run_dir(config)
    try:
        results, out_dir = run(config, out_dir=out_dir, device=args.device, quiet=args.quiet)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished batches are saved in {out_dir}; run the same command again to resume",
              file=sys.stderr)
        return 130
    if not finished(results).empty:
        print(summary_table(finished(results), config))
    failures = failure_lines(results, config)
    if failures:
        print("\n" + "\n".join(failures), file=sys.stderr)
    names = ["results.csv", "features.csv", "config.toml"] + sorted(p.name for p in out_dir.glob("*.png"))
    print(f"\nwrote {', '.join(str(out_dir / n) for n in names if (out_dir / n).exists())}")
    return 1 if failures else 0


def command_report(args) -> int:
    from .plots import draw_figures  # seaborn only once there is something to draw

    store = RunStore(args.run_dir)
    if Path(args.run_dir).is_file():
        raise ValueError(f"{args.run_dir!r} is a file, not a run folder: give the folder that holds results.csv")
    if not Path(args.run_dir).is_dir():
        raise ValueError(f"run folder {args.run_dir!r} does not exist")
    if not store.exists():
        raise ValueError(f"{args.run_dir!r} is not a run folder (it has no config.toml)")
    config = store.read_config()
    try:
        for note in store.sync():  # rebuilds a table only where no row is lost
            print(note)
    except OSError as error:  # a read-only folder: report from the batch files without writing
        print(f"toysuper: warning: cannot update the tables in {args.run_dir} ({error.strerror or error})",
              file=sys.stderr)
    results = order_rows(store.results(), config)
    keys = {config_io.point_key(p) for p in config_io.expand(config)}
    if not results.empty and not set(results["key"]) <= keys:
        raise ValueError(f"the config.toml of {args.run_dir!r} does not describe {len(set(results['key']) - keys)} "
                         f"of its rows (was it edited?); it is the experiment's record, so rerun into a new --out")
    done = finished(results)
    failures = failure_lines(results, config)
    if done.empty and not failures:
        raise ValueError(f"run folder {args.run_dir!r} has no finished rows yet")
    print(f"{config['name']}: {len(done)} of {len(keys)} configurations finished"
          + (f"\n{config['description']}" if config.get("description") else ""))
    if not done.empty:
        print(summary_table(done, config))
    if failures:
        print("\n" + "\n".join(failures))
    if done.empty:
        return 1
    try:
        paths = draw_figures(store.directory, results=done, features=store.features(), config=config)
    except OSError as error:
        print(f"toysuper: warning: cannot write the figures into {args.run_dir} ({error.strerror or error})",
              file=sys.stderr)
        return 0
    print("\nfigures: " + ", ".join(str(p) for p in paths))
    return 0


def _metric_names() -> list[str]:
    """The report's summary columns, read off a tiny grading so the list never goes stale."""
    source = DictionarySource(torch.eye(2), FeatureDistribution(2, 0.5, device="cpu"))
    report = evaluate(SAE(2, 2, 1, device="cpu"), source, n_samples=64)
    return [c for c in report.summary.columns if c != "instance"]


def command_list(args) -> int:
    print("recipes ([sae] recipe = NAME; its hyperparameters are [sae] keys and sweepable):")
    for name, recipe in RECIPES.items():
        hyper = ", ".join([f"{k}={v:g}" for k, v in recipe.hyperparameters.items()]
                          + [f"{k}={recipe.option_default(k)!r}" for k in recipe.options])  # options: per SAE
        print(f"  {name:16s} {hyper:40s} {recipe.citation}")
    print("\nfeature distributions ([features]):")
    print(f"  frequency laws (frequency = ...): {', '.join(config_io.FREQUENCY_LAWS)}; the knob is sparsity or l0")
    laws = [f"{name}({', '.join(inspect.signature(law).parameters)})" for name, law in MAGNITUDES.items()]
    print(f"  magnitude laws (magnitude = ..., [features.magnitude_params]): {', '.join(laws)}")
    print("  structure: correlated_groups, exclusive_groups, hierarchy_parents (see config keys below)")
    print("\nsources ([source] kind = ...):")
    print(f"  toy_model  (toy_model = {' | '.join(TOY_MODEL_KINDS)}; optional snr)")
    print(f"  dictionary (dictionary = {' | '.join(config_io.DICTIONARIES)}; optional noise or snr)")
    print("\nmetrics (results.csv columns, see the README's Metrics):")
    print("  " + ", ".join(_metric_names()))
    print("\nconfig keys (default):")
    for key, spec in config_io.SCHEMA.items():
        default = "-" if spec.default is None else repr(spec.default)
        print(f"  {key:31s} {default:17s} {spec.help}{' [instance axis]' if spec.instance else ''}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toysuper", description="Plant features, train toy models and SAEs, "
                                                                  "grade the SAEs against the truth.")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run (or resume) an experiment from a TOML config")
    run_parser.add_argument("config", help="path to the experiment's TOML file")
    run_parser.add_argument("--out", help="run folder (default: runs/NAME-KEY, so the same command resumes)")
    run_parser.add_argument("--device", help="cpu, cuda or auto (default: the config's, else auto)")
    run_parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            help="override a config key, e.g. --set sae.l1_coefficient=[0.1,0.3]")
    run_parser.add_argument("--executor", choices=config_io.EXECUTORS, help="where batches run (default: local)")
    run_parser.add_argument("--dry-run", action="store_true", help="print the plan and train nothing")
    run_parser.add_argument("--quiet", action="store_true", help="no progress bars")
    report_parser = commands.add_parser("report", help="re-draw a run folder's figures and print its summary")
    report_parser.add_argument("run_dir", help="the run folder")
    commands.add_parser("list", help="list recipes, distributions, sources, metrics and config keys")
    check = commands.add_parser("validate", help="grade a recipe on the ground-truth suite against the built-ins")
    check.add_argument("recipe", nargs="?", help="a recipe name or an import path module:Class")
    check.add_argument("--list", action="store_true", help="list the suite's tasks and what each asks")
    check.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a hyperparameter or "
                       "train_sae setting of the recipe, e.g. --set lr=0.001")
    check.add_argument("--suite", default="smoke", choices=["smoke", "cpu", "gpu"])
    check.add_argument("--out", help="run folder (default validate-RECIPE-SUITE; the same command resumes)")
    check.add_argument("--baselines", default="shipped", choices=["shipped", "rerun"])
    check.add_argument("--at", default="matched", choices=["matched", "defaults"], help="every recipe at the "
                       "task's L0, or at its own default sparsity")
    check.add_argument("--device", help="cpu, cuda or auto (default auto)")
    check.add_argument("--quiet", action="store_true")
    return parser


COMMANDS = {"run": command_run, "report": command_report, "list": command_list, "validate": command_validate}


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"toysuper: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if os.getcwd() not in sys.path:  # as `python -m` does: a recipe "my_recipes:Cls" is found in the current folder
        sys.path.append(os.getcwd())
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning  # one line each, no source location
        try:
            return COMMANDS[args.command](args)
        except (ValueError, TypeError) as error:  # bad input: a clear message, not a traceback
            print(f"toysuper: error: {error}", file=sys.stderr)
            return 2
        except BrokenPipeError:  # `toysuper list | head`: the reader has gone; so do we, quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout at exit
            return 141
        except OSError as error:  # the file system said no (a full disk, a folder we may not write)
            print(f"toysuper: error: {error.strerror or error}" + (f": {error.filename}" if error.filename else ""),
                  file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
