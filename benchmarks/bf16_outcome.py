"""Does bf16 change outcomes? Final FD of the Table I MLP at equal generator steps, float32
vs bf16 autocast, paired by seed (the same seed: same initial weights, data order and noise).

    bash benchmarks/bf16_outcome.sh        # trains both arms seed by seed, then runs this

Reads the two comparisons' results.json (``$OUT/false``, ``$OUT/bf16``), writes
benchmarks/results/bf16_outcome.json: per seed the FD of each arm and the difference, the
median difference and the exact paired sign-flip p (wganlab's compare report's test), and the
CPU seconds per critic step of each arm.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from wganlab.report.compare import sign_flip_p

RESULTS = Path(__file__).resolve().parent / "results" / "bf16_outcome.json"
KEYS = ("final/fd", "final/kid", "final/class_kl")


def finals(path: Path) -> dict[int, dict]:
    res = json.loads((path / "results.json").read_text())
    return {r["seed"]: r["final"] for r in res["runs"] if r.get("ok")}


def main(out: Path) -> None:
    fp32, bf16 = finals(out / "false"), finals(out / "bf16")
    seeds = sorted(set(fp32) & set(bf16))
    report = {"seeds": seeds, "per_seed": {}, "summary": {}}
    for s in seeds:
        report["per_seed"][s] = {k: {"fp32": fp32[s].get(k), "bf16": bf16[s].get(k)}
                                 for k in KEYS + ("generator_step", "ms_per_critic_step_cpu")}
    for k in KEYS + ("ms_per_critic_step_cpu",):
        diffs = [bf16[s][k] - fp32[s][k] for s in seeds if k in bf16[s] and k in fp32[s]]
        if diffs:
            report["summary"][k] = {
                "median_fp32": statistics.median(fp32[s][k] for s in seeds),
                "median_bf16": statistics.median(bf16[s][k] for s in seeds),
                "median_diff_bf16_minus_fp32": statistics.median(diffs),
                "bf16_lower": sum(d < 0 for d in diffs), "n": len(diffs),
                "sign_flip_p": sign_flip_p(diffs)}
    RESULTS.write_text(json.dumps(report, indent=1))
    for k, v in report["summary"].items():
        print(f"{k}: fp32 median {v['median_fp32']:.4g}, bf16 median {v['median_bf16']:.4g}, "
              f"median diff {v['median_diff_bf16_minus_fp32']:+.4g}, bf16 lower on "
              f"{v['bf16_lower']}/{v['n']} seeds, p = {v['sign_flip_p']:.3g}")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/bf16_outcome"))
