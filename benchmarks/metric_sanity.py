"""Do the image metrics rank obviously different sample sets the obvious way?

For each data set (full MNIST when its IDX files are present, and the embedded mnist5k default)
the same metric suite scores: held-out real test digits, the same digits blurred (sigma 1 and 2
pixels), digits of half the classes only, one digit repeated (mode collapse) and uniform noise.
Real held-out digits must win on every metric; blur must cost fidelity (FD, KID, precision)
progressively; collapse must cost recall, coverage and class KL; noise must be worst on
fidelity. Results: benchmarks/results/metric_sanity.json.

    OMP_NUM_THREADS=1 python benchmarks/metric_sanity.py [--mnist-dir DIR] [--n N]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wganlab.config import DataConfig  # noqa: E402
from wganlab.data import load_images  # noqa: E402
from wganlab.metrics import format_table  # noqa: E402
from wganlab.metrics.evaluator import cache_dir, evaluator_for  # noqa: E402
from wganlab.metrics.images import image_metrics, real_reference  # noqa: E402

KEYS = ("fd", "kid", "precision", "recall", "coverage", "class_kl", "is")
LOWER = {"fd", "kid", "class_kl"}


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of [-1, 1] images on a black (-1) background."""
    r = int(3 * sigma)
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    y = (x + 1) / 2
    y = F.conv2d(F.pad(y, (r, r, 0, 0)), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r)), k.view(1, 1, -1, 1))
    return y * 2 - 1


def conditions(test, n: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(test), generator=g)[:n].sort().values
    real = test.images[idx]
    half = test.images[test.labels < 5]
    return {
        "held-out real": real,
        "blurred, sigma 1 px": blur(real, 1.0),
        "blurred, sigma 2 px": blur(real, 2.0),
        "classes 0-4 only": half[torch.randint(len(half), (n,), generator=g)],
        "one digit repeated": real[:1].repeat(n, 1, 1, 1),
        "uniform noise": torch.rand(n, *real.shape[1:], generator=g) * 2 - 1,
    }


def check_order(rows: dict[str, dict[str, float]]) -> list[str]:
    """Violations of the expected ordering (empty: all as expected)."""
    bad = []
    real = rows["held-out real"]

    def better(a: float, b: float, key: str) -> bool:
        return a < b if key in LOWER else a > b

    for name, r in rows.items():
        if name == "held-out real":
            continue
        for key in KEYS:
            # precision measures fidelity only: real digits of a few classes (or one digit)
            # and mildly blurred digits may legitimately sit inside the real manifold
            if key == "precision" and name != "uniform noise" and name != "blurred, sigma 2 px":
                continue
            # coverage is coarse (classes made at >= half their real rate): ties are fine
            if key == "coverage" and r[f"eval/{key}"] == real[f"eval/{key}"] \
                    and name.startswith("blurred"):
                continue
            if not better(real[f"eval/{key}"], r[f"eval/{key}"], key):
                bad.append(f"{name}: {key} {r[f'eval/{key}']:.4g} not worse than real "
                           f"{real[f'eval/{key}']:.4g}")
    b1, b2 = rows["blurred, sigma 1 px"], rows["blurred, sigma 2 px"]
    for key in ("fd", "kid", "precision"):
        if not better(b1[f"eval/{key}"], b2[f"eval/{key}"], key):
            bad.append(f"blur: {key} does not worsen from sigma 1 to 2")
    return bad


def run(cfg: DataConfig, n: int) -> dict:
    train, test = load_images(cfg, "train"), load_images(cfg, "test")
    n = min(n, len(test))
    t0 = time.perf_counter()
    ev = evaluator_for(train, test)
    ev_seconds = time.perf_counter() - t0
    sidecar = json.loads(next(cache_dir().glob(f"evaluator-*-{train.content_hash()}.json"))
                         .read_text())
    rows = {}
    for name, x in conditions(test, n).items():
        t = time.perf_counter()
        rows[name] = image_metrics(x, train, test, evaluator=ev)
        rows[name]["seconds"] = round(time.perf_counter() - t, 2)
        print(f"--- {cfg.name}: {name}")
        print(format_table(rows[name]), flush=True)
    # the references a training run sees at the default eval_samples = 2,000
    refs_2000 = real_reference(train, test, ev, 2000).ref
    return {"n": n, "n_train": len(train), "n_test": len(test), "refs_at_2000": refs_2000,
            "classifier_accuracy": ev.accuracy,
            "classifier_train_seconds": sidecar.get("train_seconds"),
            "evaluator_load_or_train_seconds": round(ev_seconds, 1),
            "conditions": rows, "order_violations": check_order(rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mnist-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    ap.add_argument("--n", type=int, default=10_000, help="samples per condition (capped by "
                    "the test split: 10,000 on MNIST, 500 on mnist5k)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "metric_sanity.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                           "threads": torch.get_num_threads()}, "datasets": {}}
    cfgs = [DataConfig(name="mnist5k")]
    if (Path(args.mnist_dir) / "train-images-idx3-ubyte.gz").exists():
        cfgs.insert(0, DataConfig(name="mnist", dir=args.mnist_dir))
    else:
        print(f"full MNIST not found under {args.mnist_dir}: mnist5k only")
    for cfg in cfgs:
        results["datasets"][cfg.name] = run(cfg, args.n)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    for name, r in results["datasets"].items():
        print(f"{name}: classifier accuracy {100 * r['classifier_accuracy']:.2f} %, "
              f"order violations: {r['order_violations'] or 'none'}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
