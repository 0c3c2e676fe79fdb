import pytest
import torch

from wganlab.config import DataConfig, ModelConfig
from wganlab.models import build_models


@pytest.mark.parametrize("model,data,z,shape", [
    ("mlp", "mnist5k", 100, (5, 1, 32, 32)),
    ("dcgan", "mnist5k", 100, (5, 1, 32, 32)),
    ("toy", "8gaussians", 2, (5, 2)),
])
def test_output_shapes(model, data, z, shape):
    gen, critic = build_models(ModelConfig(name=model, z_dim=z), DataConfig(name=data))
    x = gen(torch.randn(5, z))
    assert x.shape == shape
    assert critic(x).shape == (5, 1)
    if model != "toy":  # images in [-1, 1] from the Tanh
        assert x.min() >= -1 and x.max() <= 1


def test_table1_critic_has_no_biases_and_paper_widths():
    _, critic = build_models(ModelConfig(name="mlp"), DataConfig())
    linears = [m for m in critic.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(1024, 512), (512, 256), (256, 1)]
    assert all(m.bias is None for m in linears)


def test_mlp_generator_batchnorm_eps_is_table1_param():
    gen, _ = build_models(ModelConfig(name="mlp", bn_eps=0.8), DataConfig())
    bns = [m for m in gen.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(bns) == 3 and all(m.eps == 0.8 for m in bns)


def test_dcgan_corrected_last_layer_emits_one_channel():
    gen, critic = build_models(ModelConfig(name="dcgan"), DataConfig())
    convs = [m for m in gen.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert (convs[-1].in_channels, convs[-1].out_channels) == (128, 1)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in critic.modules())
