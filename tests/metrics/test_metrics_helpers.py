"""The metrics package's shared helpers: metric metadata, the metrics.jsonl reader, cache
entries (a tensors file plus its sha256 sidecar), and sampling in eval mode."""
import json
import logging

import pytest
import torch
from torch import nn

from wganlab.metrics import meta
from wganlab.metrics.evaluator import load_entry, read_sidecar, save_entry
from wganlab.metrics.records import read_metrics
from wganlab.metrics.suite import generator_sampler


# ----------------------------------------------------------------------------- metadata

def test_directions_and_references():
    assert meta.direction("eval/fd") == meta.direction("final/fd") == meta.direction("fd") \
        == "lower"
    assert meta.direction("eval/recall") == "higher"
    for key in ("eval/classifier_acc", "eval/kid_std", "w_estimate", "eval/nonsense"):
        assert meta.direction(key) is None
    assert meta.reference_key("eval/w1") == "eval/w1_baseline"
    assert meta.reference_key("final/fd") == "final/fd_ref"
    assert meta.reference_key("eval/anything") == "eval/anything_ref"
    assert "w1_baseline" in meta.REFERENCES and "fd_ref" in meta.REFERENCES
    # every metric with a verdict is lower- or higher-is-better and has a reference
    for key, info in meta.METRICS.items():
        assert info.better in ("lower", "higher", "")
        assert info.reference or not info.better, key


# ----------------------------------------------------------------------------- metrics.jsonl

def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_read_metrics_skips_a_torn_last_line_silently_and_warns_about_others(tmp_path, caplog):
    path = _write(tmp_path / "metrics.jsonl", [
        json.dumps({"generator_step": 1, "loss": 0.5}), "[1, 2]", "",
        json.dumps({"generator_step": 2}), '{"generator_step": 3, "lo'])
    with caplog.at_level(logging.WARNING, logger="wganlab"):
        recs = read_metrics(path)
    assert [r["generator_step"] for r in recs] == [1, 2]
    assert "line 2 is not a JSON object" in caplog.text
    assert "line 5" not in caplog.text


def test_read_metrics_up_to_a_step_and_missing_files(tmp_path):
    path = _write(tmp_path / "metrics.jsonl", [json.dumps({"generator_step": s, "x": s})
                                               for s in (1, 2, 3)] + ['{"note": "no step"}'])
    assert [r.get("x") for r in read_metrics(path, upto_step=2)] == [1, 2, None]
    assert read_metrics(tmp_path / "absent.jsonl", missing_ok=True) == []
    with pytest.raises(FileNotFoundError):
        read_metrics(tmp_path / "absent.jsonl")


# ----------------------------------------------------------------------------- cache entries

def test_cache_entry_round_trip_and_damage(tmp_path):
    path, sidecar = tmp_path / "e.safetensors", tmp_path / "e.json"
    tensors = {"a": torch.arange(6.0).reshape(2, 3)}
    sha = save_entry(path, sidecar, tensors, {"note": "hi"})
    m = read_sidecar(sidecar, ("note",))
    assert m == {"sha256": sha, "note": "hi"}
    got, got_sha = load_entry(path, sidecar, m)
    assert got_sha == sha and torch.equal(got["a"], tensors["a"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.json", "e.safetensors"]
    with pytest.raises(ValueError, match="lacks the key 'other'"):
        read_sidecar(sidecar, ("other",))
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match="does not match the sha256"):
        load_entry(path, sidecar, m)
    path.unlink()
    with pytest.raises(ValueError, match="is missing"):
        load_entry(path, sidecar, m)
    sidecar.write_text("[]")
    with pytest.raises(ValueError, match="not a JSON object"):
        read_sidecar(sidecar)


# ----------------------------------------------------------------------------- eval mode

def test_generator_sampler_samples_in_eval_mode_and_restores_each_submodule():
    gen = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    gen.train()
    gen[2].eval()  # a mixed state must come back as it was
    before = gen[1].running_mean.clone()
    x = generator_sampler(gen, 4, seed=0, batch_size=3)(7)
    assert x.shape == (7, 2)
    assert torch.equal(gen[1].running_mean, before)  # eval mode: statistics did not move
    assert [m.training for m in gen] == [True, True, False] and gen.training
