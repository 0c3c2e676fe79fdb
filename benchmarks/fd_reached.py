"""Where a run stands against an FD target, from its metrics.jsonl: prints two integers, the last
logged generator step and the first one whose scheduled eval FD is below the target (0 for
either when there is none; a missing file counts as an empty run). Used by the DCGAN budget
searches of benchmarks/study.sh and benchmarks/gpu_dcgan.sh.

    python benchmarks/fd_reached.py RUN/metrics.jsonl 500
"""
import json
import sys
from pathlib import Path


def fd_reached(path: Path, target: float) -> tuple[int, int]:
    rows = ([json.loads(x) for x in path.read_text().splitlines() if x.strip()]
            if path.exists() else [])
    steps = [r["generator_step"] for r in rows if "generator_step" in r]
    hits = [r["generator_step"] for r in rows
            if isinstance(r.get("eval/fd"), (int, float)) and r["eval/fd"] < target]
    return int(max(steps, default=0)), int(hits[0]) if hits else 0


if __name__ == "__main__":
    print(*fd_reached(Path(sys.argv[1]), float(sys.argv[2])))
