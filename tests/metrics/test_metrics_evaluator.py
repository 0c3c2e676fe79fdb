import json
import warnings

import pytest
import torch
from metrics_synthetic import synthetic_sets

from wganlab.metrics import evaluator as ev_mod
from wganlab.metrics.evaluator import clear_memory_cache, evaluator_for, train_classifier

STEPS = 15


@pytest.fixture
def sets():
    return synthetic_sets()


@pytest.fixture(autouse=True)
def _fresh_memory():
    clear_memory_cache()
    yield
    clear_memory_cache()


def _no_training(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("the cached evaluator should have been used")
    monkeypatch.setattr(ev_mod, "train_classifier", fail)


def test_trains_caches_and_reloads(tmp_path, sets, monkeypatch):
    train, test = sets
    ev = evaluator_for(train, test, tmp_path, steps=STEPS, verbose=False)
    assert ev.accuracy > 0.9
    weights = list(tmp_path.glob("evaluator-*.safetensors"))
    sidecar = list(tmp_path.glob("evaluator-*.json"))
    assert len(weights) == len(sidecar) == 1
    meta = json.loads(sidecar[0].read_text())
    assert meta["sha256"] == ev.weights_sha and meta["accuracy"] == ev.accuracy
    clear_memory_cache()
    _no_training(monkeypatch)
    again = evaluator_for(train, test, tmp_path, steps=STEPS, verbose=False)
    assert again.weights_sha == ev.weights_sha and again.accuracy == ev.accuracy
    f1, p1 = ev.embed(test.images)
    f2, p2 = again.embed(test.images)
    assert torch.equal(f1, f2) and torch.equal(p1, p2)
    assert f1.shape == (len(test), 128) and torch.allclose(p1.sum(1), torch.ones(len(test)))


@pytest.mark.parametrize("damage", ["truncate", "flip", "sidecar", "delete"])
def test_corrupted_cache_is_detected_and_rebuilt(tmp_path, sets, damage):
    train, test = sets
    ev = evaluator_for(train, test, tmp_path, steps=STEPS, verbose=False)
    weights = next(tmp_path.glob("evaluator-*.safetensors"))
    sidecar = weights.with_suffix(".json")
    raw = weights.read_bytes()
    if damage == "truncate":
        weights.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":  # same size, one byte of the weights changed: only the sha sees it
        weights.write_bytes(raw[:-10] + bytes([raw[-10] ^ 0xFF]) + raw[-9:])
    elif damage == "sidecar":
        sidecar.write_text("{not json")
    else:
        weights.unlink()
    clear_memory_cache()
    with pytest.warns(UserWarning, match="evaluator cache rejected"):
        rebuilt = evaluator_for(train, test, tmp_path, steps=STEPS, verbose=False)
    # deterministic training rebuilds the very same weights, and the cache is whole again
    assert rebuilt.weights_sha == ev.weights_sha
    assert json.loads(sidecar.read_text())["sha256"] == ev_mod.sha256_file(weights)
    clear_memory_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluator_for(train, test, tmp_path, steps=STEPS, verbose=False)


def test_training_is_seeded_and_leaves_the_global_rng_alone(sets):
    train, _ = sets
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = train_classifier(train.images, train.labels, 10, steps=5)
    assert torch.equal(torch.get_rng_state(), state)
    b = train_classifier(train.images, train.labels, 10, steps=5)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(),
                                                 b.state_dict().values()))


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("WGANLAB_CACHE", str(tmp_path / "c"))
    assert ev_mod.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("WGANLAB_CACHE")
    assert ev_mod.cache_dir().parts[-2:] == (".cache", "wganlab")
