"""Reader for the IDX format of MNIST, Fashion-MNIST and KMNIST (``.gz`` or not).

Every malformed file raises :class:`DataError` naming the file and what is wrong.
"""
from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from ..errors import WganlabError, DataError  # noqa: F401


_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
           0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
#: the most data one IDX file may declare (full MNIST's images: 47 MB): checked against the
#: header before anything is read, so a gzip bomb or a huge file costs nothing
MAX_IDX_BYTES = 1 << 31
#: the data sets read here have ten classes, labelled 0-9
N_CLASSES = 10


def read_idx(path: str | Path, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Decode one IDX file into a numpy array (shape from its header). Only the bytes its
    header declares are read (decompressed as a stream), at most ``max_bytes``."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
            f.seek(0)
            stream = gzip.GzipFile(fileobj=f) if gz else f
            head = stream.read(4)
            head += stream.read(4 * head[3]) if len(head) == 4 else b""
            _, dims, expected = _header(head, str(path))
            if expected > max_bytes:
                raise DataError(f"IDX file {path} declares {dims} ({expected} bytes of data), "
                                f"more than the {max_bytes} bytes wganlab reads")
            if not gz and os.fstat(f.fileno()).st_size > len(head) + expected:
                raise DataError(f"IDX file {path} has "
                                f"{os.fstat(f.fileno()).st_size - len(head) - expected} bytes "
                                f"after the data its header {dims} declares")
            body = stream.read(expected + 1)  # one more: trailing bytes are an error
    except OSError as e:
        if isinstance(e, gzip.BadGzipFile) or not e.strerror:
            raise DataError(f"IDX file {path} is a damaged gzip archive: {e}") from None
        raise DataError(f"cannot read IDX file {path}: {e.strerror or e}") from None
    except (EOFError, zlib.error) as e:
        raise DataError(f"IDX file {path} is a damaged gzip archive: {e}") from None
    return parse_idx(head + body, str(path))


def _header(raw: bytes, name: str) -> tuple[np.dtype, list[int], int]:
    """dtype, dimensions and data size in bytes declared by the header at the start of raw."""
    if len(raw) < 4:
        raise DataError(f"IDX file {name} is too short ({len(raw)} bytes) to hold a header")
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(f"IDX file {name} has a wrong magic number "
                        f"(first bytes {raw[:4].hex()}, expected 0000 then type and rank)")
    code, ndim = raw[2], raw[3]
    if code not in _DTYPES:
        raise DataError(f"IDX file {name} has an unknown data type code 0x{code:02x}")
    if ndim == 0:
        raise DataError(f"IDX file {name} declares 0 dimensions")
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"IDX file {name} is truncated inside its header")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_DTYPES[code])
    return dtype, dims, math.prod(dims) * dtype.itemsize  # Python ints: no overflow


def parse_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    dtype, dims, expected = _header(raw, name)
    header = 4 + 4 * len(dims)
    body = len(raw) - header
    if body < expected:
        raise DataError(f"IDX file {name} is truncated: header says {dims} "
                        f"({expected} bytes of data) but it holds {body}")
    if body > expected:
        raise DataError(f"IDX file {name} has {body - expected} bytes after the data its "
                        f"header {dims} declares")
    try:
        return np.frombuffer(raw, dtype=dtype, count=expected // dtype.itemsize,
                             offset=header).reshape(dims)
    except ValueError as e:  # e.g. more dimensions than numpy supports
        raise DataError(f"IDX file {name} declares an unusable shape {dims}: {e}") from None


_PREFIX = {"train": "train", "test": "t10k"}


def find_idx_pair(folder: str | Path, split: str = "train") -> tuple[Path, Path]:
    """The image and label files of ``split`` in a standard IDX folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist or is not a folder "
                        "(set data.dir to a folder of *-idx3-ubyte[.gz] files)")
    if split not in _PREFIX:
        raise DataError(f"split must be train or test, got {split!r}")
    prefix = _PREFIX[split]
    try:
        entries = list(folder.iterdir())
    except OSError as e:
        raise DataError(f"cannot list data folder {folder}: {e.strerror or e}") from None

    def one(kind: str) -> Path:
        hits = sorted(p for p in entries
                      if p.name.startswith(prefix) and kind in p.name and p.is_file())
        if not hits:
            raise DataError(f"data folder {folder} has no {prefix}-*-{kind}-ubyte[.gz] file "
                            f"for the {split} split")
        return hits[0]

    return one("idx3"), one("idx1")


def load_idx_folder(folder: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W) uint8 and labels (N,) int64 of one split of an IDX folder."""
    img_path, lab_path = find_idx_pair(folder, split)
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3:
        raise DataError(f"IDX image file {img_path} has {images.ndim} dimensions, expected 3 "
                        "(count, rows, cols)")
    if labels.ndim != 1:
        raise DataError(f"IDX label file {lab_path} has {labels.ndim} dimensions, expected 1")
    if len(images) == 0:
        raise DataError(f"IDX image file {img_path} holds no images")
    if 0 in images.shape[1:]:
        raise DataError(f"IDX image file {img_path} declares empty images "
                        f"({images.shape[1]}x{images.shape[2]})")
    if labels.dtype.kind not in "iu":
        raise DataError(f"IDX label file {lab_path} holds {labels.dtype}, expected integer labels")
    if len(images) != len(labels):
        raise DataError(f"{img_path} holds {len(images)} images but {lab_path} holds "
                        f"{len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= N_CLASSES):
        bad = labels[(labels < 0) | (labels >= N_CLASSES)][0]
        raise DataError(f"IDX label file {lab_path} holds the label {bad}; labels must lie in "
                        f"0..{N_CLASSES - 1}")
    if images.dtype != np.uint8:
        raise DataError(f"IDX image file {img_path} holds {images.dtype}, expected uint8 pixels")
    return images, labels.astype(np.int64)
