import gzip
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from wganlab.config import DataConfig
from wganlab.data import (BatchStream, DataError, ToyStream, load_idx_folder, load_images,
                          mixture_centers, parse_idx, read_idx, sample_toy, to_image_tensor)


def test_reads_real_mnist_idx(mnist_dir):
    x, y = load_idx_folder(mnist_dir, "test")
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    # label counts from the data set's README
    assert np.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    imgs = load_images(DataConfig(name="mnist", dir=str(mnist_dir), limit=100), "train")
    assert imgs.images.shape == (100, 1, 32, 32)
    assert imgs.images.min() == -1 and imgs.images.max() == 1


def test_reads_uncompressed_idx(tmp_path, mnist_dir):
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(mnist_dir / f"{name}.gz") as f, open(tmp_path / name, "wb") as g:
            shutil.copyfileobj(f, g)
    x, y = load_idx_folder(tmp_path, "test")
    assert len(x) == len(y) == 10000


def _fashion_dir():
    try:
        files = subprocess.run(["dpkg", "-L", "dataset-fashion-mnist"], capture_output=True,
                               text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return None
    hits = [Path(f).parent for f in files if "t10k-images-idx3-ubyte" in f]
    return hits[0] if hits else None


def test_reads_fashion_mnist_when_installed():
    folder = _fashion_dir()
    if folder is None:
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    x, y = load_idx_folder(folder, "test")
    assert x.shape == (10000, 28, 28)
    assert np.bincount(y).tolist() == [1000] * 10


def test_embedded_default_split():
    train = load_images(DataConfig(name="mnist5k"), "train")
    test = load_images(DataConfig(name="mnist5k"), "test")
    assert len(train) == 4500 and len(test) == 500
    assert train.content_hash() != test.content_hash()


def _idx(dims, dtype_code=0x08, body=None):
    header = bytes([0, 0, dtype_code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    n = int(np.prod(dims))
    return header + (bytes(n) if body is None else body)


@pytest.mark.parametrize("raw,msg", [
    (b"\x00\x00", "too short"),
    (b"\x01\x02\x08\x03" + bytes(20), "magic"),
    (b"\x00\x00\x42\x01" + bytes(8), "unknown data type"),
    (_idx([3, 4, 4])[:-5], "truncated"),
    (_idx([3, 4, 4]) + b"xx", "after the data"),
    (b"\x00\x00\x08\x03\x00\x00", "inside its header"),
])
def test_malformed_idx_gives_clear_error(raw, msg):
    with pytest.raises(DataError, match=msg):
        parse_idx(raw, "bad.idx")


def test_malformed_files_name_the_file(tmp_path):
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    bad.write_bytes(b"\x1f\x8b" + b"garbage")
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        read_idx(bad)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx([3, 28, 28]))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx([4]))
    with pytest.raises(DataError, match="3 images but .* 4 labels"):
        load_idx_folder(tmp_path, "test")
    with pytest.raises(DataError, match="does not exist"):
        load_idx_folder(tmp_path / "nope")
    with pytest.raises(DataError, match="no train"):
        load_idx_folder(tmp_path, "train")


def test_image_tensor_padding():
    x = to_image_tensor(np.full((2, 28, 28), 255, np.uint8), 32)
    assert x.shape == (2, 1, 32, 32)
    assert (x[:, :, 2:30, 2:30] == 1).all() and (x[:, :, :2] == -1).all()


@pytest.mark.parametrize("name", ["8gaussians", "25gaussians", "swissroll", "checkerboard"])
def test_toy_samplers(name):
    g = torch.Generator().manual_seed(0)
    x = sample_toy(name, 500, g)
    assert x.shape == (500, 2) and torch.isfinite(x).all()
    x2 = sample_toy(name, 500, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)


def test_gaussian_mixture_points_near_modes():
    g = torch.Generator().manual_seed(0)
    x = sample_toy("25gaussians", 1000, g, std=0.02).double()
    d = torch.cdist(x, mixture_centers("25gaussians")).min(1).values
    assert d.max() < 0.02 * 6


def test_batch_stream_resume_and_sharding():
    data = torch.arange(100).float()
    a = BatchStream(data, 10, seed=3)
    seen = [a.next() for _ in range(15)]  # crosses an epoch boundary
    assert torch.equal(torch.sort(torch.cat(seen[:10])).values, data)
    b = BatchStream(data, 10, seed=3)
    for _ in range(7):
        b.next()
    c = BatchStream(data, 10, seed=3)
    c.load_state_dict(b.state_dict())
    assert torch.equal(c.next(), seen[7])
    r0, r1 = BatchStream(data, 10, 3, 0, 2), BatchStream(data, 10, 3, 1, 2)
    assert torch.equal(torch.cat([r0.next(), r1.next()]), seen[0])


def test_toy_stream_resume():
    s = ToyStream("8gaussians", 16, seed=1)
    s.next()
    state = s.state_dict()
    x = s.next()
    t = ToyStream("8gaussians", 16, seed=99)
    t.load_state_dict(state)
    assert torch.equal(t.next(), x)
