"""Scratch folders on a RAM disk when the machine has one: the checkpoint tests write (and
fsync) hundreds of small files, and on a virtual disk each fsync costs milliseconds."""
import os
import shutil
import tempfile
from pathlib import Path

import pytest

SHM = Path("/dev/shm")


def _make(fallback: Path) -> tuple[Path, bool]:
    if SHM.is_dir() and os.access(SHM, os.W_OK):
        return Path(tempfile.mkdtemp(prefix="wganlab-test-", dir=SHM)), True
    return fallback, False


@pytest.fixture
def fast_path(tmp_path):
    """Like ``tmp_path``, on /dev/shm where possible."""
    path, owned = _make(tmp_path)
    yield path
    if owned:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def fast_module_path(tmp_path_factory):
    """A module-wide scratch folder, on /dev/shm where possible."""
    path, owned = _make(tmp_path_factory.mktemp("fast"))
    yield path
    if owned:
        shutil.rmtree(path, ignore_errors=True)
