import math

import pytest
import torch
from metrics_synthetic import synthetic_sets, write_idx_folder

from wganlab.config import DataConfig
from wganlab.metrics import evaluate, format_table
from wganlab.metrics import evaluator as ev_mod
from wganlab.metrics import images as im_mod
from wganlab.metrics import suite
from wganlab.metrics.evaluator import evaluator_for
from wganlab.metrics.images import image_metrics

STEPS = 15


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    ev_mod.clear_memory_cache()
    im_mod.clear_memory_cache()
    cache = tmp_path_factory.mktemp("cache")
    train, test = synthetic_sets()
    ev = evaluator_for(train, test, cache, steps=STEPS, verbose=False)
    return train, test, ev, cache


def test_held_out_real_images_score_exactly_the_reference(setup):
    train, test, ev, cache = setup
    r = image_metrics(test.images, train, test, evaluator=ev, directory=cache)
    for key in ("fd", "kid", "precision", "recall", "coverage", "class_kl", "is"):
        assert r[f"eval/{key}"] == pytest.approx(r[f"eval/{key}_ref"], rel=1e-6, abs=1e-9)
    assert r["eval/ref_n"] == r["eval/n"] == len(test)
    assert r["eval/classifier_acc"] == ev.accuracy
    assert r["eval/coverage"] == 1 and r["eval/precision"] > 0.5


def test_noise_and_collapse_are_far_from_the_reference(setup):
    train, test, ev, cache = setup
    g = torch.Generator().manual_seed(0)
    noise = image_metrics(torch.rand(100, 1, 32, 32, generator=g) * 2 - 1, train, test,
                          evaluator=ev, directory=cache)
    collapse = image_metrics(train.images[:1].repeat(100, 1, 1, 1), train, test,
                             evaluator=ev, directory=cache)
    for r in (noise, collapse):
        assert r["eval/fd"] > 5 * r["eval/fd_ref"]
        assert r["eval/recall"] < 0.1
        assert r["eval/kid"] > r["eval/kid_ref"]
    assert collapse["eval/coverage"] == pytest.approx(0.1)
    assert collapse["eval/class_kl"] == pytest.approx(math.log(10), rel=1e-6)
    assert "fd" in format_table(noise)


def test_flat_samples_are_reshaped_and_nan_samples_give_nan(setup):
    train, test, ev, cache = setup
    flat = image_metrics(test.images.reshape(100, -1), train, test, evaluator=ev,
                         directory=cache)
    assert flat["eval/fd"] == pytest.approx(flat["eval/fd_ref"], rel=1e-6)
    bad = test.images.clone()
    bad[3] = float("nan")
    r = image_metrics(bad, train, test, evaluator=ev, directory=cache)
    assert math.isnan(r["eval/fd"]) and not math.isnan(r["eval/fd_ref"])
    with pytest.raises(ValueError, match="do not fit"):
        image_metrics(torch.zeros(10, 7), train, test, evaluator=ev, directory=cache)


def test_real_statistics_cache_is_reused_and_rebuilt_when_corrupted(setup):
    train, test, ev, cache = setup
    first = image_metrics(test.images[:50], train, test, evaluator=ev, directory=cache)
    files = list(cache.glob("realstats-*-50.safetensors"))
    assert len(files) == 1
    im_mod.clear_memory_cache()
    files[0].write_bytes(files[0].read_bytes()[:100])
    with pytest.warns(UserWarning, match="real-statistics cache rejected"):
        again = image_metrics(test.images[:50], train, test, evaluator=ev, directory=cache)
    assert again == first


def test_evaluate_reads_the_data_config(tmp_path, monkeypatch):
    folder = write_idx_folder(tmp_path / "idx")
    monkeypatch.setattr(ev_mod, "DEFAULT_STEPS", STEPS)
    monkeypatch.setattr(suite, "_PREPARED", {})
    cfg = DataConfig(name="idx", dir=str(folder), limit=50)
    test = synthetic_sets()[1]
    r = evaluate(lambda n: test.images[:n], cfg, n_samples=80, seed=0, cache=tmp_path / "c")
    assert r["eval/n"] == 80 and r["eval/real_n"] == 80  # the whole split, not data.limit
    assert r["eval/coverage"] > 0.5 and r["eval/fd"] < 5 * r["eval/fd_ref"] + 1
    assert list((tmp_path / "c").glob("evaluator-*.json"))
