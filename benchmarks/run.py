"""Performance benchmark: every figure of the Performance table, measured in one run.

    python benchmarks/run.py            # the README table (about 7 minutes on a 2-core CPU)
    python benchmarks/run.py --quick    # the same rows at smaller sizes (about a minute)
    python benchmarks/run.py --no-peer  # without SAELens (the peer needs the [bench] extra)

Machines are shared and timings drift, so every target is a ratio of two timings taken here,
one right after the other:
    - SAE training throughput per recipe on the standard recovery task, as samples/s and as a
      fraction of the time the step's five matmuls take alone, eager, with torch.compile for
      the dense recipes, and with bf16 autocast (benchmarks/throughput.py);
    - 64 toy models in one batched pass against 64 single-instance runs (toy_batching.py);
    - the feature draws: the peer task's, 64 toy models', 16,384 Zipf features (sampling.py, which also
      times them against an earlier revision);
    - grading time at 1k, 4k and 16k true features (grading.py; 16k only without --quick);
    - the peer task, BatchTopK k = 8 on 1024 features in 128 dims, trained by SAELens's
      synthetic pipeline and by toysuper on the same 2 million samples, three rounds (peer_saelens.py).
Prints the table and writes it to OUT.csv and OUT.md (default benchmarks/results/performance).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import peer_saelens  # noqa: E402
import sampling  # noqa: E402
import throughput  # noqa: E402
import toy_batching  # noqa: E402

DENSE_RECIPES = ("anthropic_2024", "relu_l1", "jumprelu", "gated")
"""Recipes whose step is dense arithmetic: the ≥ 60%-of-matmul target applies to them."""


def row(section: str, measure: str, value: float, unit: str, target: str = "", met=None) -> dict:
    return {"section": section, "measure": measure, "value": value, "unit": unit, "target": target,
            "met": "" if met is None else ("yes" if met else "NO")}


def throughput_rows(steps: int, device: str) -> list[dict]:
    """Per recipe: samples/s eager, with torch.compile (dense recipes) and with bf16 autocast, and the
    fraction of the matmul bound; for a dense recipe, that of its faster float32 mode, which is named."""
    rows = []
    for r in throughput.recipe_throughput(steps, device, compiled=DENSE_RECIPES):
        dense = r["recipe"] in DENSE_RECIPES
        rows.append(row("SAE training", f"{r['recipe']}: samples/s", r["samples_per_s"], "samples/s"))
        if dense:
            rows.append(row("SAE training", f"{r['recipe']}: samples/s with torch.compile",
                            r["compiled_samples_per_s"], "samples/s"))
            mode = "compiled" if r["compiled_samples_per_s"] > r["samples_per_s"] else "eager"
            fraction = r["compiled_fraction_of_matmul_bound" if mode == "compiled" else "fraction_of_matmul_bound"]
            rows.append(row("SAE training", f"{r['recipe']}: matmul bound / step time ({mode})", fraction,
                            "ratio", "≥ 0.6", fraction >= 0.6))
        else:
            rows.append(row("SAE training", f"{r['recipe']}: matmul bound / step time", r["fraction_of_matmul_bound"],
                            "ratio", "(sparse decoding)"))
        rows.append(row("SAE training", f"{r['recipe']}: samples/s with bf16 autocast", r["bf16_samples_per_s"],
                        "samples/s"))
    return rows


def toy_rows(steps: int, device: str) -> list[dict]:
    result = toy_batching.compare(64, steps, device)
    return [row("toy models", f"64 batched vs 64 sequential ({steps} steps each)", result["speedup"], "× faster",
                "≥ 20", result["speedup"] >= 20),
            row("toy models", "one sequential step", 1e3 * result["sequential_s"] / (64 * steps), "ms"),
            row("toy models", "one batched step (64 instances)", 1e3 * result["batched_s"] / steps, "ms"),
            row("toy models", "drawing one batched step's features", result["draw_ms"], "ms"),
            row("toy models", "ceiling: 64 sequential steps / that draw alone", result["ceiling"], "×"),
            row("toy models", "page faults per batched step", result["batched_page_faults"], "faults")]


def sampling_rows(device: str) -> list[dict]:
    return [row("sampling", name, ms, "ms") for name, ms in sampling.timings(device).items()]


def grading_rows(sizes: list[int], n_samples: int) -> list[dict]:
    rows = []
    for n in sizes:  # a fresh process per size, as in grading.py, so peak memory is that size's own
        output = subprocess.run([sys.executable, str(HERE / "grading.py"), "--one", str(n), "--n-samples",
                                 str(n_samples)], capture_output=True, text=True, check=True).stdout
        result = json.loads(output.strip().splitlines()[-1])
        rows.append(row("grading", f"{n:,} features × {4 * n:,} latents ({n_samples:,} samples)",
                        result["grade_s"], "s"))
        rows.append(row("grading", f"{n:,} features: peak memory", result["peak_gb"], "GB"))
    return rows


def peer_rows(samples: int, rounds: int) -> list[dict]:
    fp32, theirs, bf16 = peer_saelens.compare(samples, rounds)
    rows = [row("peer", "SAELens synthetic: samples/s", theirs["samples_per_s"], "samples/s")]
    for ours in (fp32, bf16):
        rows += [row("peer", f"{ours['pipeline']}: samples/s", ours["samples_per_s"], "samples/s"),
                 row("peer", f"{ours['pipeline']} / SAELens samples/s (median of {rounds} rounds)",
                     ours["speedup"], "×", "≥ 5", ours["speedup"] >= 5)]
        if rounds > 1:  # the spread within this run, so that the median can be read against it
            rows += [row("peer", f"{ours['pipeline']} / SAELens: lowest round", min(ours["speedups"]), "×"),
                     row("peer", f"{ours['pipeline']} / SAELens: highest round", max(ours["speedups"]), "×")]
    rows.append(row("peer", f"SAELens recovered@0.9 after {samples:,} samples", theirs["recovered@0.9"], "fraction"))
    for ours in (fp32, bf16):
        rows.append(row("peer", f"{ours['pipeline']} recovered@0.9 after {samples:,} samples", ours["recovered@0.9"],
                        "fraction", "higher", ours["recovered@0.9"] > theirs["recovered@0.9"]))
    dead = [row("peer", f"{r['pipeline']} dead latents", r["dead_fraction"], "fraction") for r in (theirs, fp32, bf16)]
    return rows + dead


def number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def markdown(table: pd.DataFrame) -> str:
    lines = ["| section | measure | value | unit | target | met |", "|---|---|---|---|---|---|"]
    for r in table.to_dict("records"):
        lines.append(f"| {r['section']} | {r['measure']} | {number(r['value'])} | {r['unit']} | {r['target']} | "
                     f"{r['met']} |")
    return "\n".join(lines) + "\n"


def machine() -> str:
    threads = torch.get_num_threads()
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()}, {threads} torch thread(s), torch {torch.__version__}"


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, about a minute")
    parser.add_argument("--no-peer", action="store_true", help="skip the SAELens comparison")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(HERE / "results" / "performance"), help="writes OUT.csv and OUT.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    sections = [lambda: throughput_rows(20 if args.quick else 100, args.device),
                lambda: toy_rows(50 if args.quick else 300, args.device),
                lambda: sampling_rows(args.device),
                lambda: grading_rows([1024] if args.quick else [1024, 4096, 16384], 5_000 if args.quick else 20_000)]
    if not args.no_peer:
        sections.append(lambda: peer_rows(100_000 if args.quick else 2_000_000, 1 if args.quick else 3))
    rows = []
    for section in sections:
        new = section()
        print(pd.DataFrame(new).to_string(header=False, index=False), flush=True)
        rows += new
    table = pd.DataFrame(rows)
    elapsed = time.perf_counter() - start
    footer = f"\n{machine()}; {'--quick, ' if args.quick else ''}total {elapsed:.0f} s.\n"
    print("\n" + markdown(table) + footer)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out.with_suffix(".csv"), index=False)
    out.with_suffix(".md").write_text(markdown(table) + footer)
    return table


if __name__ == "__main__":
    main()
