"""train.amp: bf16 autocast on CPU trains, keeps float32 master weights and optimizer state,
runs the penalties' double backward, and resumes bit-identically."""
import pytest
import torch

from wganlab.config import ConfigError
from wganlab.train import Trainer
from wganlab.train.checkpoint import resume
from wganlab.train.precision import amp_dtype, cpu_has_native_bf16, native_bf16

from conftest import tiny_config


def _critic_output_dtypes(trainer: Trainer) -> set:
    seen = set()
    first = next(m for m in trainer.critic.modules() if isinstance(m, torch.nn.Linear))
    first.register_forward_hook(lambda m, i, o: seen.add(o.dtype))
    trainer._critic_step(diagnose=False)
    return seen


def test_amp_values():
    assert tiny_config().train.amp is False
    assert tiny_config(**{"train.amp": "true"}).train.amp is True  # older configs
    assert tiny_config(**{"train.amp": "bf16"}).train.amp == "bf16"
    with pytest.raises(ConfigError, match="train.amp must be bf16 or false"):
        tiny_config(**{"train.amp": "fp16"})
    cpu = torch.device("cpu")
    assert amp_dtype(False, cpu) is None
    assert amp_dtype(True, cpu) is amp_dtype("bf16", cpu) is torch.bfloat16


def test_native_bf16_read_from_cpu_flags():
    assert native_bf16("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16\n")
    assert native_bf16("flags\t\t: fpu amx_bf16 amx_tile\n")
    assert not native_bf16("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    assert not native_bf16("")
    assert isinstance(cpu_has_native_bf16(), bool)


@pytest.mark.parametrize("constraint", ["clip", "gp", "r1"])
def test_bf16_trains_with_float32_masters(tmp_path, constraint):
    sets = {"constraint.name": constraint, "train.generator_steps": 8}
    t = Trainer(tiny_config(**sets, **{"train.amp": "bf16"}), tmp_path / "bf16")
    assert _critic_output_dtypes(t) == {torch.bfloat16}  # the matmuls do run in bf16
    t.run()
    ref = Trainer(tiny_config(**sets), tmp_path / "fp32")
    assert _critic_output_dtypes(ref) == {torch.float32}
    ref.run()
    for net in (t.critic, t.generator):
        assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in net.parameters())
    for opt in (t.opt_critic, t.opt_generator):
        for state in opt.state.values():
            assert all(v.dtype == torch.float32 for v in state.values()
                       if isinstance(v, torch.Tensor) and v.is_floating_point())
    last = t.history[-1]
    assert last["generator_step"] == 8 and all(
        torch.isfinite(torch.tensor(last[k])) for k in ("loss_critic", "loss_generator"))
    if constraint != "clip":  # a penalty through bf16 matmuls, its norm summed in float32
        assert last["penalty/" + constraint + "_grad_norm"] > 0
    # bf16 changes the arithmetic, so the weights differ from the float32 run's
    assert not all(torch.equal(a, b) for a, b in zip(t.critic.parameters(),
                                                     ref.critic.parameters()))


@pytest.mark.parametrize("constraint", ["clip", "gp"])
def test_bf16_resume_is_bit_identical(tmp_path, constraint):
    sets = {"constraint.name": constraint, "train.amp": "bf16", "train.checkpoint_every": 2}
    full = Trainer(tiny_config(**sets, **{"train.generator_steps": 8}), tmp_path / "full")
    full.run()
    part = tmp_path / "part"
    Trainer(tiny_config(**sets, **{"train.generator_steps": 4}), part).run()
    again = Trainer(tiny_config(**sets, **{"train.generator_steps": 8}), part)
    resume(again, part)
    assert again.generator_step == 4
    again.run()
    for a, b in ((full.critic, again.critic), (full.generator, again.generator)):
        for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), f"{k} differs after a bf16 resume"


def test_warns_once_without_native_bf16(monkeypatch, caplog):
    from wganlab.train import precision
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    precision._warn_emulated.cache_clear()
    cpu = torch.device("cpu")
    assert amp_dtype("bf16", cpu) is amp_dtype(True, cpu) is torch.bfloat16
    assert caplog.text.count("emulated") == 1
    precision._warn_emulated.cache_clear()
