"""Performance benchmark: every figure of the README's performance table, measured in one run.

    python benchmarks/run.py                 # on this machine's CPU (about 15 minutes on 2 cores)
    python benchmarks/run.py --device cuda   # the GPU table (an H200-class GPU: a few minutes)
    python benchmarks/run.py --quick         # the same rows at smaller sizes
    python benchmarks/run.py --no-peer       # without SAELens (the peer needs the [bench] extra)

Machines are shared and timings drift, so every target is a ratio of two timings taken in this run:
    - per recipe: SAE-samples/s and the fraction of its matmul bound at 1 and 64 instances, eager, and on
      CUDA captured in a CUDA graph (benchmarks/throughput.py);
    - task P (1024 features in 128 dims, BatchTopK k = 8) and task W (16,384 Zipf features in 768 dims,
      BatchTopK k = 32, batch 4096) against SAELens's synthetic pipeline on the same device
      (benchmarks/peer_saelens.py);
    - each device-specific path against the formulation it replaces (choices.py);
    - toy models at 1, 64 and 4,096 instances, and 64 batched against 64 sequential (toy_batching.py);
    - the feature draw (sampling.py); grading at 1k, 4k and 16k true features (grading.py);
    - on a CPU, the quickstart's wall time.
Prints the table and writes it to OUT.csv and OUT.md (default benchmarks/results/performance-DEVICE).
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
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import choices  # noqa: E402
import peer_saelens  # noqa: E402
import sampling  # noqa: E402
import throughput  # noqa: E402
import toy_batching  # noqa: E402


def row(section: str, measure: str, value: float, unit: str, target: str = "", met=None) -> dict:
    return {"section": section, "measure": measure, "value": value, "unit": unit, "target": target,
            "met": "" if met is None else ("yes" if met else "NO")}


def throughput_rows(steps: int, device: str, instances: list[int]) -> list[dict]:
    """Per recipe and instance count: SAE-samples/s and the fraction of the matmul bound, eager and captured."""
    gpu = torch.device(device).type == "cuda"
    rows = []
    for r in throughput.recipe_throughput(steps, device, instances):
        name = f"{r['recipe']}, {r['instances']} instance{'s' if r['instances'] > 1 else ''}, {r['mode']}"
        rows.append(row("SAE training", f"{name}: SAE-samples/s", r["samples_per_s"], "samples/s"))
        target = gpu and r["instances"] == 64 and r["mode"] == "captured"
        rows.append(row("SAE training", f"{name}: matmul bound / step", r["fraction_of_matmul_bound"], "ratio",
                        "≥ 0.5" if target else "", r["fraction_of_matmul_bound"] >= 0.5 if target else None))
        if gpu and r["recipe"] == "batchtopk" and r["instances"] == 64 and r["mode"] == "captured":
            rows.append(row("SAE training", "task P, 64 instances, float32: SAE-samples/s", r["samples_per_s"],
                            "samples/s", "≥ 30M", r["samples_per_s"] >= 30e6))
    return rows


def peer_rows(samples: int, rounds: int, world_steps: int, device: str) -> list[dict]:
    gpu = torch.device(device).type == "cuda"
    theirs, fp32, bf16 = peer_saelens.compare_task_p(samples, rounds, device)
    rows = [row("peer", "task P, SAELens float32: samples/s", theirs["samples_per_s"], "samples/s")]
    for ours in (fp32, bf16):
        rows.append(row("peer", f"task P, {ours['pipeline']}: samples/s", ours["samples_per_s"], "samples/s",
                        "≥ 2.5M" if gpu and ours is fp32 else "",
                        ours["samples_per_s"] >= 2.5e6 if gpu and ours is fp32 else None))
        target, bar = ("≥ 10", 10) if gpu else ("≥ 4", 4)
        rows.append(row("peer", f"task P, {ours['pipeline']} / SAELens (median of {rounds} rounds)",
                        ours["speedup"], "×", target if ours is fp32 else "", ours["speedup"] >= bar if ours is fp32
                        else None))
    for r in (theirs, fp32, bf16):
        rows.append(row("peer", f"task P, {r['pipeline']}: recovered@0.9 after {r['samples']:,} samples",
                        r["recovered@0.9"], "fraction"))
        rows.append(row("peer", f"task P, {r['pipeline']}: dead latents", r["dead_fraction"], "fraction"))
    if world_steps:
        for r in peer_saelens.compare_task_w(world_steps, device):
            rows.append(row("peer", f"task W, {r['pipeline']}: samples/s", r["samples_per_s"], "samples/s"))
            if "speedup" in r:
                target = gpu and r["pipeline"].endswith("bfloat16")
                rows.append(row("peer", f"task W, {r['pipeline']} / SAELens", r["speedup"], "×",
                                "≥ 4" if target else "", r["speedup"] >= 4 if target else None))
                if target:  # 0.62 TFLOP a step (the count) against the bf16 peak of an H200 (790 TFLOP/s)
                    bound = peer_saelens.W["batch"] / (0.62e12 / 790e12)
                    rows.append(row("peer", "task W, toysuper bfloat16: fraction of the bf16 matmul bound",
                                    r["samples_per_s"] / bound, "ratio", "≥ 0.5", r["samples_per_s"] / bound >= 0.5))
    return rows


def choice_rows(device: str, quick: bool) -> list[dict]:
    """Each device-specific path against the formulation it replaces here: it must earn > 20% (DESIGN.md)."""
    cpu = torch.device(device).type == "cpu"
    rows = []
    for name, ratio in choices.compare(device, 5 if quick else 20).items():
        rows.append(row("choices", name, ratio, "×", "> 1.2" if cpu else "",  # CPU paths: they must win there
                        ratio > 1.2 if cpu else None))
    return rows


def toy_rows(steps: int, device: str, instances: list[int]) -> list[dict]:
    rows = []
    for n in instances:
        # on a CPU a step of 4,096 toy models takes about a second: fewer steps for it there
        few = n > 64 and torch.device(device).type == "cpu"
        seconds = toy_batching.step_time(n, max(steps // 10, 5) if few else steps, device)
        rows.append(row("toy models", f"{n:,} instances: one step", 1e3 * seconds, "ms"))
        rows.append(row("toy models", f"{n:,} instances: instance-steps/s", n / seconds, "steps/s"))
    result = toy_batching.compare(64, steps, device)
    rows.append(row("toy models", f"64 batched vs 64 sequential ({steps} steps each)", result["speedup"], "× faster"))
    return rows


def sampling_rows(device: str, quick: bool) -> list[dict]:
    rows = []
    for name, ms in sampling.timings(device, n_rounds=3 if quick else 10).items():
        rows.append(row("feature draw", name, ms, "ms"))
    return rows


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


def quickstart_rows() -> list[dict]:
    """The README's main job, `toysuper run experiments/quickstart.toml`, into a fresh folder."""
    out = ROOT / "runs" / f"benchmark-quickstart-{int(time.time())}"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "toysuper.sweep.cli", "run", str(ROOT / "experiments" / "quickstart.toml"),
                    "--out", str(out), "--quiet", "--device", "cpu"], check=True, capture_output=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    return [row("quickstart", "toysuper run experiments/quickstart.toml (CPU, fresh folder)", seconds, "s", "≤ 35",
                seconds <= 35)]


def number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def markdown(table: pd.DataFrame) -> str:
    lines = ["| section | measure | value | unit | target | met |", "|---|---|---|---|---|---|"]
    for r in table.to_dict("records"):
        lines.append(f"| {r['section']} | {r['measure']} | {number(r['value'])} | {r['unit']} | {r['target']} | "
                     f"{r['met']} |")
    return "\n".join(lines) + "\n"


def machine(device: str) -> str:
    if torch.device(device).type == "cuda":
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s), "
            f"torch {torch.__version__}")


SECTIONS = ["choices", "throughput", "toy", "draw", "grading", "peer", "quickstart"]


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--no-peer", action="store_true", help="skip the SAELens comparison")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="writes OUT.csv and OUT.md (default benchmarks/results/performance-DEVICE)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=SECTIONS, help="only these sections")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device, quick = args.device, args.quick
    gpu = torch.device(device).type == "cuda"
    instances = [1, 64] if gpu or not quick else [1, 8]
    start = time.perf_counter()
    sections = {"choices": lambda: choice_rows(device, quick),
                "throughput": lambda: throughput_rows(10 if quick else (200 if gpu else 20), device, instances),
                "toy": lambda: toy_rows(20 if quick else 200, device,
                                        [1, 64, 4096] if gpu or not quick else [1, 64]),
                "draw": lambda: sampling_rows(device, quick),
                "grading": lambda: grading_rows([1024] if quick else [1024, 4096, 16384], 5_000 if quick else 20_000),
                "peer": lambda: peer_rows(100_000 if quick else 2_000_000, 1 if quick else 3,
                                          0 if quick or not gpu else 300, device),
                "quickstart": quickstart_rows}
    chosen = [name for name in args.sections if not (name == "peer" and args.no_peer)
              and not (name == "quickstart" and gpu)]
    rows = []
    for name in chosen:
        new = sections[name]()
        print(pd.DataFrame(new).to_string(header=False, index=False), flush=True)
        rows += new
    table = pd.DataFrame(rows)
    footer = f"\n{machine(device)}; {'--quick, ' if quick else ''}total {time.perf_counter() - start:.0f} s.\n"
    print("\n" + markdown(table) + footer)
    out = Path(args.out or HERE / "results" / f"performance-{torch.device(device).type}")
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out.with_suffix(".csv"), index=False)
    out.with_suffix(".md").write_text(markdown(table) + footer)
    return table


if __name__ == "__main__":
    main()
