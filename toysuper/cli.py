"""The `toysuper` command."""

from __future__ import annotations

import argparse
import sys

import pandas as pd

SUMMARY_COLUMNS = ["n_graded", "n_represented", "dims_per_feature", "mmcs", "hungarian_cos", "activation_mcc",
                   "fvu", "l0", "dead_fraction"]


def _summary_table(results: pd.DataFrame, axes: list[str], threshold: float) -> str:
    columns = axes + [c for c in SUMMARY_COLUMNS[:3] if c in results] + [f"recovered@{threshold:g}"] + \
        [c for c in SUMMARY_COLUMNS[3:] if c in results]
    table = results[columns].rename(columns={a: a.split(".")[-1] for a in axes})
    return table.to_string(index=False, float_format=lambda v: f"{v:.3f}")


def command_run(args) -> int:
    from . import config as config_io
    from .experiments import run

    config = config_io.load(args.config, args.set)
    results, out_dir = run(config, out_dir=args.out, device=args.device, quiet=args.quiet)
    axes = list(config_io.axes(config))
    print(_summary_table(results, axes, config["evaluate"]["threshold"]))
    print(f"\nwrote {out_dir / 'results.csv'}, {out_dir / 'config.toml'} and {out_dir / 'recovery.png'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toysuper", description="Plant features, train toy models and SAEs, "
                                                                  "grade the SAEs against the truth.")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run an experiment from a TOML config")
    run_parser.add_argument("config", help="path to the experiment's TOML file")
    run_parser.add_argument("--out", help="run folder (default: runs/NAME-TIMESTAMP)")
    run_parser.add_argument("--device", help="cpu, cuda or auto (default: the config's, else auto)")
    run_parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            help="override a config key, e.g. --set sae.l1_coefficient=[0.1,0.3]")
    run_parser.add_argument("--quiet", action="store_true", help="no progress bars")
    run_parser.set_defaults(handler=command_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ValueError as error:  # bad input: a clear message, not a traceback
        print(f"toysuper: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
