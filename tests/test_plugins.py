"""Plugins describe themselves: a new constraint is one file. The test copies the package, adds
a constraint as a single file (no other file changed), and shows that it is registered,
configurable with ``--set``, trained by a toy run and passes the contract tests (including
one-vs-two-process equality); then the registries' own rules and the deprecation path of the
flat constraint keys of older configs."""
from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from wganlab.config import ConfigError, from_dict, load_config, load_stored
from wganlab.plugins import CONSTRAINTS, DATASETS, Registry, data_spec

REPO = Path(__file__).resolve().parents[1]

HALFCLIP = '''"""Clip every critic parameter to [-bound, bound] (a test plugin)."""
from dataclasses import dataclass

import torch

from .base import Constraint
from .registry import register


@dataclass
class HalfClipParams:
    bound: float = 0.05

    def validate(self):
        if self.bound <= 0:
            raise ValueError(f"bound must be > 0 (got {self.bound})")


class HalfClip(Constraint):
    name = "halfclip"

    def __init__(self, critic, bound):
        super().__init__(critic)
        self.bound = bound

    @torch.no_grad()
    def step(self, optimizer=None, *, diagnose=False):
        for p in self.critic.parameters():
            p.clamp_(-self.bound, self.bound)
        if diagnose:
            self._diagnostics = {"halfclip/bound": float(self.bound)}


@register("halfclip", params=HalfClipParams)
def _build(critic, section):
    return HalfClip(critic, section.params("halfclip").bound)
'''


def _run(argv, env, cwd, timeout=600):
    p = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout + p.stderr


def test_a_new_constraint_is_one_file(tmp_path):
    copy = tmp_path / "src"
    shutil.copytree(REPO / "wganlab", copy / "wganlab",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "wganlab" / "constraints" / "halfclip.py").write_text(HALFCLIP)
    diff = filecmp.dircmp(REPO / "wganlab" / "constraints", copy / "wganlab" / "constraints")
    assert diff.right_only == ["halfclip.py"] and not diff.diff_files
    env = dict(os.environ, PYTHONPATH=str(copy), OMP_NUM_THREADS="1",
               WGANLAB_TEST_CASES="halfclip")
    run = tmp_path / "run"
    _run([sys.executable, "-m", "wganlab", "train", "--config", "toy", "--out", str(run),
          "--set", "constraint.name=halfclip", "--set", "constraint.halfclip.bound=0.03",
          "--set", "train.generator_steps=3", "--set", "train.n_critic=2",
          "--set", "train.warmup_generator_steps=0", "--set", "model.toy_hidden=16",
          "--set", "train.tensorboard=false", "--set", "train.progress=false",
          "--set", "train.sample_every=1000", "--set", "train.threads=1"], env, tmp_path)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["constraint"]["name"] == "halfclip"
    assert cfg["constraint"]["halfclip"] == {"bound": 0.03}
    from safetensors.torch import load_file
    critic = load_file(str(run / "critic.safetensors"))
    assert max(float(t.abs().max()) for t in critic.values()) <= 0.03
    # the contract tests, collected from the copy's registries, now include halfclip
    out = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                str(REPO / "tests" / "constraints" / "test_contract.py"),
                str(REPO / "tests" / "train" / "test_distributed.py"), "-k", "halfclip"],
               env, tmp_path)
    assert "failed" not in out and "error" not in out.lower()
    assert "5 passed" in out, out[-2000:]  # 3 contract + replicas + equal-to-one-process


def test_registry_refuses_a_name_taken_by_another_object():
    reg = Registry("thing")
    reg.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(len)
    with pytest.raises(ConfigError, match="choose from a"):
        reg.get("b", "x.name")
    with pytest.raises(TypeError, match="dataclass"):
        reg.register("c", params=dict)


def test_every_constraint_with_parameters_has_a_section():
    cfg = load_config("toy")
    for plug in CONSTRAINTS:
        if plug.params is not None:
            assert isinstance(cfg.constraint.params(plug.name), plug.params)
            assert plug.name in cfg.to_dict()["constraint"]


def test_data_specs_replace_name_lists():
    assert data_spec("8gaussians").toy and not data_spec("mnist").toy
    assert data_spec("fashion-mnist").needs_dir and not data_spec("mnist5k").needs_dir
    assert all(DATASETS.get(n).obj.channels == 1 for n in ("mnist", "kmnist"))
    with pytest.raises(ConfigError, match="data.name='nope' is not a registered data set"):
        load_config("toy", ["data.name=nope"])


# ----------------------------------------------------------------------------- deprecation

FLAT = {"name": "invclip", "clip": [0.1, 0.2, 0.3, 0.4], "clip_when": "before",
        "solver": "paper", "alpha": 1.5, "k_max": 3, "max_drift": 0.2, "transform_state": True,
        "gp_lambda": 2.0, "r1_gamma": 3.0, "sn_power_iterations": 2, "subsample": 16,
        "variants": {"v": {"name": "invclip", "solver": "exact", "max_drift": 0.5}}}
NESTED = {"name": "invclip", "clip": {"bound": [0.1, 0.2, 0.3, 0.4], "when": "before"},
          "invclip": {"solver": "paper", "max_drift": 0.2, "transform_state": True},
          "solvers": {"paper": {"alpha": 1.5, "k_max": 3},
                      "paper-guarded": {"alpha": 1.5, "k_max": 3},
                      "output": {"subsample": 16}},
          "gp": {"weight": 2.0}, "lp": {"weight": 2.0}, "r1": {"gamma": 3.0},
          "sn": {"power_iterations": 2},
          "variants": {"v": {"name": "invclip", "invclip": {"solver": "exact",
                                                            "max_drift": 0.5}}}}


def _toy(constraint: dict) -> dict:
    return {"data": {"name": "8gaussians"}, "model": {"name": "toy"}, "constraint": constraint}


def test_flat_keys_load_as_their_sections_with_a_warning():
    with pytest.warns(DeprecationWarning) as caught:
        old = from_dict(_toy(FLAT))
    messages = " ".join(str(w.message) for w in caught)
    assert "constraint.max_drift -> constraint.invclip.max_drift" in messages
    assert "constraint.variants.v.solver -> constraint.variants.v.invclip.solver" in messages
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        new = from_dict(_toy(NESTED))
    old_d, new_d = old.to_dict(), new.to_dict()
    old_d["constraint"]["variants"] = new_d["constraint"]["variants"] = {}
    assert old_d == new_d
    assert old.constraint.resolve("v").to_dict() == new.constraint.resolve("v").to_dict()
    assert old.constraint.resolve("v").params("invclip").max_drift == 0.5


def test_flat_set_overrides_and_attributes_still_work():
    with pytest.warns(DeprecationWarning, match="constraint.invclip.max_drift"):
        cfg = load_config("mnist_mlp", ["constraint.max_drift=0.3"])
    assert cfg.constraint.params("invclip").max_drift == 0.3
    with pytest.warns(DeprecationWarning):
        assert cfg.constraint.clip == [0.035, 0.045, 0.0625]
    with pytest.warns(DeprecationWarning):
        cfg = load_config("mnist_mlp", ["constraint.variants.invclip-paper.max_drift=0.3"])
    assert cfg.constraint.resolve("invclip-paper").params("invclip").max_drift == 0.3


def test_an_old_run_folder_loads_quietly_and_resumes(tmp_path):
    """A run folder written before the plugin sections (flat keys in config.yaml and in its
    checkpoint) evaluates and resumes without a warning or a config difference."""
    from conftest import tiny_config
    from wganlab.report.evaluate import load_run_config
    from wganlab.train import Trainer
    from wganlab.train.checkpoint import check_resume_config, latest_checkpoint
    cfg = tiny_config(**{"constraint.name": "gp", "train.generator_steps": 2,
                         "train.checkpoint_every": 1})
    Trainer(cfg, tmp_path).run()
    flat = cfg.to_dict()
    flat["constraint"] = {"name": "gp", "clip": 0.01, "gp_lambda": 0.1, "r1_gamma": 0.1,
                          "variants": flat["constraint"]["variants"]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(flat))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert load_run_config(tmp_path).to_dict() == cfg.to_dict()
        assert load_stored(flat).to_dict() == cfg.to_dict()
        ckpt = latest_checkpoint(tmp_path)
        ckpt.config = flat
        check_resume_config(ckpt, cfg)


def test_the_plugins_command_lists_keys_and_capabilities(capsys):
    from wganlab.cli import main
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "constraint.invclip.max_drift=None" in out and "output [discrete, uses_batch]" in out
    assert "sn [reparametrises]" in out and "fashion-mnist: image, reads data.dir" in out
