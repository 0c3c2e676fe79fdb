import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("WGANLAB_SHARED", REPO.parent / "shared"))
MNIST_DIR = SHARED / "data" / "mnist"

torch.set_num_threads(1)


@pytest.fixture
def mnist_dir() -> Path:
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"MNIST IDX files not found under {MNIST_DIR}")
    return MNIST_DIR


def tiny_config(**sets):
    """A fast toy config with overrides given as dotted keys (seed, train.generator_steps...)."""
    from wganlab.config import load_config
    base = ["train.generator_steps=6", "train.n_critic=2", "train.warmup_generator_steps=0",
            "train.log_every=2", "train.sample_every=1000", "train.tensorboard=false",
            "train.progress=off", "model.toy_hidden=16", "data.batch_size=32", "train.threads=1"]
    return load_config("toy", base + [f"{k}={v}" for k, v in sets.items()])
