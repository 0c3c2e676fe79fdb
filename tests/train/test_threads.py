"""train.threads: auto never takes a core another process is using."""
import os
import subprocess
import sys
import time

import pytest

from wganlab.config import ConfigError
from wganlab.train import threads
from wganlab.train.threads import auto_threads, idle_cores, resolve_threads

from conftest import tiny_config


def test_threads_values():
    assert tiny_config(**{"train.threads": "auto"}).train.threads == "auto"
    assert tiny_config(**{"train.threads": 0}).train.threads == 0
    with pytest.raises(ConfigError, match="train.threads must be auto or a number"):
        tiny_config(**{"train.threads": "many"})
    with pytest.raises(ConfigError, match="train.threads"):
        tiny_config(**{"train.threads": -1})


def test_resolve(monkeypatch):
    assert resolve_threads(3, "mlp") == 3
    assert resolve_threads(0, "mlp") is None  # PyTorch's default
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert resolve_threads("auto", "toy") == 2  # the environment's choice wins
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert resolve_threads("auto", "toy") == 1  # small models: one thread
    monkeypatch.setattr(threads, "idle_cores", lambda: 5)
    monkeypatch.setattr(threads, "usable_cpus", lambda: 4)
    assert auto_threads("dcgan") == 4
    monkeypatch.setattr(threads, "idle_cores", lambda: 0)
    assert auto_threads("mlp") == 1


def test_a_busy_core_is_not_idle():
    busy = subprocess.Popen([sys.executable, "-c", "while 1: pass"])
    try:
        time.sleep(0.5)
        assert idle_cores() <= (os.cpu_count() or 1) - 1  # the spinning core is not idle
    finally:
        busy.kill()
        busy.wait()
