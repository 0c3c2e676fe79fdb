import json
import os

import pytest
import torch
from torch import nn

from wganlab.atomic import atomic_write, atomic_write_json
from wganlab.models.mode import evaluating


def test_atomic_write_replaces_whole_file_and_leaves_no_temporaries(tmp_path):
    p = tmp_path / "sub" / "a.json"
    atomic_write_json(p, {"x": 1, "p": tmp_path})
    atomic_write(p, "new", durable=True)
    assert p.read_text() == "new"
    atomic_write(p, lambda tmp: open(tmp, "wb").write(b"\x00\x01"))
    assert p.read_bytes() == b"\x00\x01"
    assert os.listdir(p.parent) == ["a.json"]


def test_atomic_write_failure_keeps_old_file(tmp_path):
    p = tmp_path / "a.json"
    atomic_write_json(p, {"x": 1})
    with pytest.raises(TypeError):
        atomic_write_json(p, {"x": object()})
    assert json.loads(p.read_text()) == {"x": 1}
    assert os.listdir(tmp_path) == ["a.json"]


def test_evaluating_restores_each_submodule_mode():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    net.train()
    net[0].eval()
    with evaluating(net):
        assert not any(m.training for m in net.modules())
        net(torch.randn(4, 2))
    assert [m.training for m in net.modules()] == [True, False, True]
