import pytest

from wganlab.config import ConfigError, load_config


def test_presets_load_and_validate():
    for name in ("toy", "mnist_mlp", "mnist_dcgan", "wgan_original"):
        cfg = load_config(name)
        assert cfg.train.generator_steps > 0


def test_original_wgan_recipe():
    cfg = load_config("wgan_original")
    assert cfg.optim.critic.name == "rmsprop" and cfg.optim.critic.lr == 5e-5
    assert cfg.constraint.params("clip").bound == 0.01
    assert (cfg.train.n_critic, cfg.train.warmup_n_critic, cfg.train.warmup_generator_steps,
            cfg.train.warmup_every) == (5, 100, 25, 500)


def test_overrides():
    cfg = load_config("toy", ["constraint.name=none", "train.generator_steps=7", "seed=3",
                              "data.name=25gaussians", "constraint.clip.bound=[0.1, 0.2, 0.3, 0.4]"])
    assert (cfg.constraint.name, cfg.train.generator_steps, cfg.seed) == ("none", 7, 3)
    assert cfg.data.name == "25gaussians" and cfg.constraint.params("clip").bound == [0.1, 0.2, 0.3, 0.4]


@pytest.mark.parametrize("override,key", [
    ("train.generator_steps=-3", "train.generator_steps"),
    ("train.n_critic=abc", "train.n_critic"),
    ("train.nonsense=1", "train.nonsense"),
    ("data.name=cifar", "data.name"),
    ("constraint.name=clipp", "constraint.name"),
    ("optim.critic.lr=0", "optim.critic.lr"),
    ("optim.critic.betas=[0.5]", "optim.critic.betas"),
    ("constraint.clip.bound=-1", "constraint.clip"),
    ("model.name=mlp", "model.name"),
    ("data.name=mnist", "data.dir"),
    ("train.tensorboard=maybe", "train.tensorboard"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("toy", [override])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)
    bad.write_text("data: 3\n")
    with pytest.raises(ConfigError, match="data"):
        load_config(bad)


def test_variants_resolve():
    cfg = load_config("toy")
    v = cfg.constraint.resolve("invclip-exact-state")
    p = v.params("invclip")
    assert (v.name, p.solver, p.transform_state) == ("invclip", "exact", True)
    with pytest.raises(ConfigError, match="variants.x.invclip.solver"):
        load_config("toy", ["constraint.variants={x: {name: invclip, invclip: {solver: nope}}}"])
