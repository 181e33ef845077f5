"""Benchmark: time and peak memory of grading an SAE, up to 16,384 true features × 65,536 latents.

The case: n true features along random unit directions in d = 768 dimensions (GPT-2 small's
width), each firing with probability 32/n (L0 = 32, magnitudes U[0, 1]); a toysuper SAE
with k = 4n latents whose first n decoder rows are noised copies of the true directions
(cosine about 0.95) and the rest random, encoder = decoderᵀ, b_enc = -0.2. `evaluate` grades
it on 20,000 held-out samples with every diagnostic on. Each size runs in a fresh process so
its peak resident memory (`peak_gb`) is its own; the table also gives the memory the process
held before grading (source + SAE) and the time of the direction-level part alone (chunked
cosines + matching). Wall times (`*_s`) depend on what else runs on the machine; CPU times
(`*_cpu_s`, all threads) much less so: on 2 otherwise idle cores, wall lies between CPU / 2
and CPU (the matching is single-threaded).

    python benchmarks/grading.py                        # 1k, 4k and 16k features (k = 4n)
    python benchmarks/grading.py --sizes 16384          # only the largest
    python benchmarks/grading.py --check-exact 4096     # also: sparse matching == exact Hungarian at n = 4096

This is a benchmark, not a test: it asserts nothing, it reports.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

D_HIDDEN, L0, RATIO, COSINE_NOISE = 768, 32, 4, 0.33


def build(n: int, seed: int = 0):
    import toysuper as ts

    k = RATIO * n
    directions = ts.random_directions(n, D_HIDDEN, seed=seed, device="cpu")[0]
    source = ts.DictionarySource(directions, ts.FeatureDistribution(n, L0 / n, device="cpu"))
    sae = ts.SAE(D_HIDDEN, k, device="cpu", seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        noise = torch.randn(n, D_HIDDEN, generator=generator) * COSINE_NOISE / D_HIDDEN ** 0.5
        sae.W_dec[0, :n] = directions + noise  # cos ≈ 1 / sqrt(1 + 0.33²) ≈ 0.95
        sae.W_dec[0, n:] = torch.randn(k - n, D_HIDDEN, generator=generator)
        sae.W_dec.div_(sae.W_dec.norm(dim=-1, keepdim=True))
        sae.W_enc.copy_(sae.W_dec.transpose(-1, -2))
        sae.b_enc.fill_(-0.2)
        sae.b_dec.zero_()
    return source, sae


def peak_gb() -> float:
    """This process's peak resident memory, GB. On Linux, VmHWM: the high-water mark of this program's own address
    space. ru_maxrss survives exec, so a child of a large process (benchmarks/run.py) would report its parent's."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1e6  # kB
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux; elsewhere a rough figure


def one(n: int, n_samples: int) -> dict:
    """Grade one size in this process; returns the figures (memory in GB)."""
    from toysuper import evaluate
    from toysuper.grade.matching import candidate_edges, cosine_tops, match

    torch.set_num_threads(2)
    source, sae = build(n)
    held = peak_gb()
    start, cpu = time.perf_counter(), time.process_time()
    G, D = source.true_directions(), sae.decoder_directions()
    tops = cosine_tops(G, D)
    found = match(G[0], D[0], edges=candidate_edges(tops))
    direction_s, direction_cpu = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    report = evaluate(sae, source, n_samples=n_samples, quiet=True)
    grade_s, grade_cpu = time.perf_counter() - start, time.process_time() - cpu
    summary = report.summary.iloc[0]
    return {"n_features": n, "d_sae": sae.d_sae, "d_hidden": D_HIDDEN, "n_samples": n_samples,
            "matching": summary["matching"], "grade_s": round(grade_s, 1), "grade_cpu_s": round(grade_cpu, 1),
            "directions_s": round(direction_s, 1), "directions_cpu_s": round(direction_cpu, 1),
            "direction_matching": found.method, "peak_gb": round(peak_gb(), 2),
            "before_grading_gb": round(held, 2), "recovered@0.9": round(float(summary["recovered@0.9"]), 3),
            "hungarian_cos": round(float(summary["hungarian_cos"]), 4)}


def check_exact(n: int) -> dict:
    """Sparse vs exact Hungarian on the same case (the exact one is slow: minutes at n = 4096)."""
    from toysuper.grade.matching import match

    torch.set_num_threads(2)
    source, sae = build(n)
    G, D = source.true_directions()[0], sae.decoder_directions()[0]
    timings, results = {}, {}
    for method in ("sparse", "exact"):
        start = time.perf_counter()
        results[method] = match(G, D, method)
        timings[method] = round(time.perf_counter() - start, 1)
    same = bool((results["sparse"].assignment.latent == results["exact"].assignment.latent).all())
    return {"n_features": n, "d_sae": RATIO * n, "same_assignment": same,
            "sparse_s": timings["sparse"], "exact_s": timings["exact"],
            "sum_cos_sparse": float(results["sparse"].assignment.cosine.sum()),
            "sum_cos_exact": float(results["exact"].assignment.cosine.sum())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 16384], help="true features n (k = 4n)")
    parser.add_argument("--n-samples", type=int, default=20_000)
    parser.add_argument("--check-exact", type=int, metavar="N", help="compare sparse and exact matching at N features")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one size in this process
    parser.add_argument("--exact-one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, args.n_samples)))
        return 0
    if args.exact_one:
        print(json.dumps(check_exact(args.exact_one)))
        return 0
    jobs = [["--one", str(n), "--n-samples", str(args.n_samples)] for n in args.sizes]
    if args.check_exact:
        jobs.append(["--exact-one", str(args.check_exact)])
    for job in jobs:  # a fresh process per size: peak memory is that size's own
        output = subprocess.run([sys.executable, __file__, *job], capture_output=True, text=True, check=True).stdout
        print(json.loads(output.strip().splitlines()[-1]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
