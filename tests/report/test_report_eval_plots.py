import json

import pytest
import torch
from safetensors.torch import save_file

from wganlab.config import dump_config, load_config
from wganlab.models import build_models
from wganlab.report.evaluate import RunError, run_eval
from wganlab.report.plots import plot_curves, run_plot


def _make_toy_run(run_dir, constraint="clip", steps=(0, 10, 20)):
    cfg = load_config("toy", ["model.toy_hidden=16", f"constraint.name={constraint}",
                              "train.eval_samples=200"])
    run_dir.mkdir(parents=True)
    dump_config(cfg, run_dir / "config.yaml")
    torch.manual_seed(0)
    generator, critic = build_models(cfg.model, cfg.data)
    if constraint == "sn":
        from wganlab.constraints import build_constraint
        build_constraint(critic, cfg.constraint)
    for name, net in (("generator", generator), ("critic", critic)):
        save_file({k: v.contiguous() for k, v in net.state_dict().items()},
                  str(run_dir / f"{name}.safetensors"))
    with open(run_dir / "metrics.jsonl", "w") as f:
        for i, g in enumerate(steps):
            rec = {"generator_step": g, "critic_step": 5 * g, "wall_time": 0.1 * g,
                   "w_estimate": 1.0 / (i + 1), "loss_critic": -1.0, "loss_generator": 0.5}
            if g % 20 == 0:
                rec.update({"eval/w1": 2.0 / (i + 1), "eval/w1_baseline": 0.05,
                            "eval/modes_hit": float(i), "eval/modes_hit_ref": 8.0})
            f.write(json.dumps(rec) + "\n")
        f.write('{"generator_step": 30, "w_est')  # a torn last line from a killed run
    return run_dir, cfg, generator


def test_run_eval_writes_eval_json(tmp_path):
    run, cfg, generator = _make_toy_run(tmp_path / "run")
    lines = []
    res = run_eval(run, samples=200, out=lines.append)
    saved = json.loads((run / "eval.json").read_text())
    assert saved["metrics"] == res and saved["samples"] == 200
    assert res["eval/n"] == 200 and res["eval/w1"] > 0 and "eval/modes_hit" in res
    assert any("w1" in line for line in lines)
    # a checkpoint file holding a {"generator": state} dict gives the same result
    torch.save({"generator": generator.state_dict()}, tmp_path / "ckpt.pt")
    assert run_eval(run, checkpoint=tmp_path / "ckpt.pt", samples=200, out=lambda s: None) == res


def test_run_eval_names_the_problem(tmp_path):
    with pytest.raises(RunError, match="no config.yaml"):
        run_eval(tmp_path)
    run, _, _ = _make_toy_run(tmp_path / "run")
    (run / "generator.safetensors").write_bytes(b"garbage")
    with pytest.raises(RunError, match="not a readable safetensors"):
        run_eval(run, samples=50, out=lambda s: None)
    torch.save({"critic": {}}, tmp_path / "c.pt")
    with pytest.raises(RunError, match="no 'generator'"):
        run_eval(run, checkpoint=tmp_path / "c.pt", out=lambda s: None)


def test_plots_for_one_and_several_runs(tmp_path):
    a, _, _ = _make_toy_run(tmp_path / "a")
    b, _, _ = _make_toy_run(tmp_path / "b", constraint="sn", steps=(0, 20, 40, 60))
    files = run_plot([a])
    names = {p.name for p in files}
    assert {"w_estimate.png", "eval_w1.png", "eval_modes_hit.png", "toy.png"} <= names
    assert all(p.parent == a / "plots" and p.stat().st_size > 1000 for p in files)
    files = run_plot([a, b], out=tmp_path / "cmp")
    assert {"toy-a.png", "toy-b.png", "loss_critic.png"} <= {p.name for p in files}
    assert plot_curves([a], tmp_path / "one", keys=["eval/w1"])[0].name == "eval_w1.png"


def test_eval_and_plot_a_trained_toy_run_and_its_checkpoint(tmp_path):
    from conftest import tiny_config

    from wganlab.train import train
    cfg = tiny_config(**{"train.checkpoint_every": 3, "train.eval_every": 3,
                         "train.eval_samples": 200})
    run = tmp_path / "run"
    train(cfg, run)
    final = run_eval(run, samples=200, out=lambda s: None)
    ckpt = run_eval(run, checkpoint="latest", samples=200, out=lambda s: None)
    assert final == ckpt  # the last checkpoint holds the final weights
    assert json.loads((run / "eval.json").read_text())["checkpoint"].endswith("step_0000006")
    files = {p.name for p in run_plot([run])}
    assert {"eval_w1.png", "toy.png", "w_estimate.png"} <= files
