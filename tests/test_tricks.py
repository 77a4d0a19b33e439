"""Each trick switch changes what it claims and nothing else."""
import pytest
import torch

from ssgan.config import Config, replace
from ssgan.data.splits import load_split
from ssgan.errors import ConfigError
from ssgan.nets.losses import unsupervised_loss
from ssgan.nets.models import GaussianNoise, build_discriminator, build_generator
from ssgan.nets.monitor import collapse_metrics
from ssgan.training.step import build_nets
from ssgan.training.fit import fit
from ssgan.training.tricks import lr_factor, noise_scale, real_fake_targets, set_noise_scale

from test_train import tiny_cfg


def tricks(**changes):
    return replace(Config(), **{f"tricks.{k}": v for k, v in changes.items()}).tricks


def test_no_tricks_means_plain_targets():
    assert real_fake_targets(4, 4, tricks(), torch.device("cpu")) == (None, None)


def test_one_sided_smoothing_softens_only_real_targets():
    t_real, t_fake = real_fake_targets(1000, 1000, tricks(label_smoothing=True, smoothing_range=[0.8, 0.95]), "cpu")
    assert 0.8 <= t_real.min() and t_real.max() <= 0.95 and t_real.std() > 0
    assert torch.equal(t_fake, torch.zeros(1000))


def test_smoothing_changes_only_the_real_term_of_the_d_loss():
    logits_real, logits_fake = torch.randn(8, 3), torch.randn(8, 3)
    t_real = torch.full((8,), 0.9)
    plain = unsupervised_loss(logits_real, logits_fake, 3)
    smooth = unsupervised_loss(logits_real, logits_fake, 3, t_real, torch.zeros(8))
    fake_term = unsupervised_loss(torch.full((8, 3), 1e4), logits_fake, 3)  # real term ~ 0 here
    smooth_fake_term = unsupervised_loss(torch.full((8, 3), 1e4), logits_fake, 3, t_real, torch.zeros(8))
    assert smooth != plain
    # the fake term is the same with or without smoothing ...
    assert torch.allclose(fake_term, unsupervised_loss(torch.full((8, 3), 1e4), logits_fake, 3, None, torch.zeros(8)))
    # ... and the real term is the BCE against 0.9: 0.9 * softplus(-r) + 0.1 * softplus(r)
    r = torch.logsumexp(logits_real, 1)
    expected = (0.9 * torch.nn.functional.softplus(-r) + 0.1 * torch.nn.functional.softplus(r)).mean()
    assert torch.allclose(smooth - (plain - torch.nn.functional.softplus(-r).mean()), expected, atol=1e-6)
    assert torch.isfinite(smooth_fake_term)


def test_plain_targets_equal_the_default_loss_exactly():
    logits_real, logits_fake = torch.randn(8, 3), torch.randn(8, 3)
    assert torch.allclose(unsupervised_loss(logits_real, logits_fake, 3),
                          unsupervised_loss(logits_real, logits_fake, 3, torch.ones(8), torch.zeros(8)))


def test_flip_fraction_zero_is_identity_and_one_swaps_all():
    t_real, t_fake = real_fake_targets(50, 30, tricks(label_flip=True, flip_fraction=0.0), "cpu")
    assert torch.equal(t_real, torch.ones(50)) and torch.equal(t_fake, torch.zeros(30))
    t_real, t_fake = real_fake_targets(50, 30, tricks(label_flip=True, flip_fraction=1.0), "cpu")
    assert torch.equal(t_real, torch.zeros(50)) and torch.equal(t_fake, torch.ones(30))
    t_real, t_fake = real_fake_targets(5000, 5000, tricks(label_flip=True, flip_fraction=0.05), "cpu")
    flipped = (t_real == 0).sum() + (t_fake == 1).sum()
    assert 300 < flipped < 700  # about 5 % of 10000


def test_gaussian_noise_switch_and_annealing(npz_path):
    D = build_discriminator(Config().model, (4,), 2).train()
    x = torch.randn(3, 4)
    set_noise_scale(D, noise_scale(tricks(gaussian_noise=False), 0, 10))
    assert torch.equal(D(x)[0], D(x)[0])  # no noise even in training mode
    set_noise_scale(D, 1.0)
    assert not torch.equal(D(x)[0], D(x)[0])
    anneal = tricks(noise_anneal=True)
    assert [noise_scale(anneal, s, 10) for s in (0, 5, 10)] == [1.0, 0.5, 0.0]
    assert all(m.scale == 1.0 for m in D.modules() if isinstance(m, GaussianNoise))


def test_warmup_and_step_decay_follow_the_formula():
    cfg = replace(Config(), **{"tricks.warmup_steps": 10, "train.lr_schedule": "constant"})
    assert [lr_factor(cfg.train, cfg.tricks, s, 100) for s in (0, 4, 9, 50)] == [0.1, 0.5, 1.0, 1.0]
    step = replace(Config(), **{"train.lr_schedule": "step", "train.decay_start": 0.25, "train.step_gamma": 0.5})
    assert [lr_factor(step.train, step.tricks, s, 100) for s in (0, 24, 25, 50, 99)] == [1.0, 1.0, 0.5, 0.25, 0.125]


def test_optimizer_and_separate_learning_rates(npz_path):
    cfg = tiny_cfg(npz_path, **{"tricks.optimizer": "sgd", "tricks.lr_d": 0.01, "tricks.lr_g": 0.002})
    nets = build_nets(cfg, (1, 8, 8), 3, torch.device("cpu"))
    assert isinstance(nets.opt_d, torch.optim.SGD) and nets.opt_d.param_groups[0]["momentum"] == 0.9
    assert nets.opt_d.param_groups[0]["lr"] == 0.01 and nets.opt_g.param_groups[0]["lr"] == 0.002
    adam = build_nets(tiny_cfg(npz_path), (1, 8, 8), 3, torch.device("cpu"))
    assert isinstance(adam.opt_d, torch.optim.Adam) and adam.opt_d.param_groups[0]["betas"] == (0.5, 0.999)
    assert adam.opt_d.param_groups[0]["eps"] == 1e-8
    eps = build_nets(tiny_cfg(npz_path, **{"train.adam_eps": 1e-4}), (1, 8, 8), 3, torch.device("cpu"))
    assert eps.opt_d.param_groups[0]["eps"] == 1e-4 and eps.opt_g.param_groups[0]["eps"] == 1e-4
    own = build_nets(tiny_cfg(npz_path, **{"tricks.betas_g": [0.0, 0.9999]}), (1, 8, 8), 3, torch.device("cpu"))
    assert own.opt_g.param_groups[0]["betas"] == (0.0, 0.9999) and own.opt_d.param_groups[0]["betas"] == (0.5, 0.999)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_dropout_in_the_discriminator_only_when_asked(arch):
    model_cfg = replace(Config(), **{"model.arch": arch, "model.conv_width": 4, "model.d_hidden": [8]}).model
    with_dropout = build_discriminator(model_cfg, (1, 8, 8), 3, tricks(dropout=0.3))
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.3 for m in with_dropout.modules())
    assert not any(isinstance(m, torch.nn.Dropout) for m in build_discriminator(model_cfg, (1, 8, 8), 3).modules())


@pytest.mark.parametrize(
    "key,value",
    [("tricks.smoothing_range", [0.4, 1.0]), ("tricks.smoothing_range", [0.9, 1.1]), ("tricks.flip_fraction", 1.5),
     ("tricks.flip_fraction", -0.1), ("tricks.dropout", 1.0), ("tricks.watchdog.patience", 0)],
)
def test_bad_trick_values_name_the_key(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        replace(Config(), **{key: value})


def test_warmup_longer_than_training_is_an_error(npz_path):
    cfg = tiny_cfg(npz_path, **{"tricks.warmup_steps": 1000})
    with pytest.raises(ConfigError, match="tricks.warmup_steps=1000 is longer than training"):
        fit(cfg, load_split(cfg.data), progress=False)


def test_watchdog_stops_when_d_loss_stays_low_and_rolls_back(npz_path):
    # Every D loss counts as "collapsed" with this threshold: the watchdog must fire after `patience` steps.
    cfg = tiny_cfg(npz_path, **{"train.epochs": 4, "train.steps_per_epoch": 4,
                                "tricks.watchdog.d_loss_below": 1e9, "tricks.watchdog.patience": 6})
    result = fit(cfg, load_split(cfg.data), progress=False)
    assert result.stop_reason == "d_loss_collapse" and "label_smoothing" in result.stop_message
    assert len(result.history) == 1  # epoch 1 (4 steps) was good; the run stopped inside epoch 2


def test_watchdog_stops_on_nan_and_keeps_finite_weights(npz_path):
    cfg = tiny_cfg(npz_path, **{"train.epochs": 3, "train.lr": 1e30, "train.ema_decay": 0.0})
    result = fit(cfg, load_split(cfg.data), progress=False)
    assert result.stop_reason == "non_finite_loss"
    assert all(torch.isfinite(p).all() for p in result.classifier.parameters())


def test_watchdog_warn_mode_continues(npz_path):
    cfg = tiny_cfg(npz_path, **{"train.epochs": 2, "train.steps_per_epoch": 4, "tricks.watchdog.action": "warn",
                                "tricks.watchdog.d_loss_below": 1e9, "tricks.watchdog.patience": 2})
    result = fit(cfg, load_split(cfg.data), progress=False)
    assert result.stop_reason == "completed" and len(result.history) == 2
    assert "d_loss_collapse" in result.watchdog_warnings


def test_supervised_runs_are_not_stopped_for_a_low_loss(npz_path):
    cfg = tiny_cfg(npz_path, mode="supervised", **{"train.epochs": 2, "tricks.watchdog.d_loss_below": 1e9,
                                                    "tricks.watchdog.patience": 1})
    assert fit(cfg, load_split(cfg.data), progress=False).stop_reason == "completed"


def test_collapse_monitor_flags_a_constant_generator():
    D = build_discriminator(replace(Config(), **{"model.d_hidden": [16]}).model, (1, 8, 8), 3)
    x_real = torch.rand(64, 1, 8, 8) * 2 - 1
    constant = torch.zeros(64, 1, 8, 8)
    collapsed = collapse_metrics(D, constant, x_real, 3)
    assert collapsed["gen_diversity"] == 0.0 and collapsed["gen_classes"] == 1.0
    varied = collapse_metrics(D, torch.rand(64, 1, 8, 8) * 2 - 1, x_real, 3)
    assert varied["gen_diversity"] > 0.5


def test_collapse_monitor_is_logged_and_can_stop_training(npz_path):
    cfg = tiny_cfg(npz_path, **{"train.epochs": 2, "tricks.watchdog.min_diversity": 1.0})
    result = fit(cfg, load_split(cfg.data), progress=False)
    assert result.stop_reason == "mode_collapse" and result.history == []
    ok = fit(tiny_cfg(npz_path, **{"train.epochs": 1}), load_split(cfg.data), progress=False)
    assert {"gen_diversity", "gen_classes"} <= set(ok.history[0])


NORM_LAYERS = {"batch": (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d), "layer": (torch.nn.LayerNorm, torch.nn.GroupNorm),
               "instance": (torch.nn.InstanceNorm2d,)}


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("norm", ["batch", "instance", "layer", "weight", "spectral", "none"])
@pytest.mark.parametrize("net", ["d", "g"])
def test_normalization_switch_per_network(arch, norm, net):
    cfg = replace(Config(), **{"model.arch": arch, "model.conv_width": 4, "model.d_hidden": [8], "model.g_hidden": [8],
                               "model.noise_dim": 4})
    t = tricks(**{f"{net}_norm": norm})
    build = (lambda tr: build_discriminator(cfg.model, (1, 8, 8), 3, tr)) if net == "d" else \
        (lambda tr: build_generator(cfg.model, (1, 8, 8), "tanh", tr))
    if arch == "mlp" and norm == "instance":
        with pytest.raises(ConfigError, match=f"tricks.{net}_norm=instance does not apply"):
            build(t)
        return
    model = build(t).train()
    out = model(torch.randn(4, 1, 8, 8)) if net == "d" else model(torch.rand(4, 4))
    assert (out[0] if net == "d" else out).shape[0] == 4
    names = " ".join(type(m).__name__ for m in model.modules())
    params = " ".join(n for n, _ in model.named_parameters())
    if norm in NORM_LAYERS:
        assert any(isinstance(m, NORM_LAYERS[norm]) for m in model.modules())
    other = tuple(cls for k, classes in NORM_LAYERS.items() if k != norm for cls in classes)
    assert not any(isinstance(m, other) for m in model.modules()), names  # no other normalization layer
    if norm == "spectral":
        assert "parametrizations.weight.original" in params
    if norm == "weight" and net == "d":
        assert "WeightNormLinear" in names or "parametrizations.weight.original0" in params


def test_pooling_instead_of_strided_convs():
    cfg = replace(Config(), **{"model.arch": "conv", "model.conv_width": 4})
    pooled = build_discriminator(cfg.model, (1, 8, 8), 3, tricks(downsample="pool"))
    assert sum(isinstance(m, torch.nn.AvgPool2d) for m in pooled.modules()) == 2
    assert pooled(torch.randn(2, 1, 8, 8))[0].shape == (2, 3)
    strided = build_discriminator(cfg.model, (1, 8, 8), 3, tricks())
    assert not any(isinstance(m, torch.nn.AvgPool2d) for m in strided.modules())
    with pytest.raises(ConfigError, match="tricks.downsample=pool does not apply to model.arch=mlp"):
        build_discriminator(Config().model, (1, 8, 8), 3, tricks(downsample="pool"))


def test_leaky_relu_switch():
    for act, cls in (("relu", torch.nn.ReLU), ("leaky_relu", torch.nn.LeakyReLU)):
        for arch in ("mlp", "conv"):
            cfg = replace(Config(), **{"model.arch": arch, "model.activation": act, "model.conv_width": 4})
            D = build_discriminator(cfg.model, (1, 8, 8), 3)
            assert any(type(m) is cls for m in D.modules())


@pytest.mark.parametrize("condition", ["onehot", "embedding"])
def test_conditional_generator_draws_the_asked_class(npz_path, condition):
    """Samples G(z, c) are classified as c — by an independent classifier fitted on the tiny test data —
    well above chance (1/3)."""
    from sklearn.linear_model import LogisticRegression

    cfg = tiny_cfg(npz_path, **{"tricks.conditional": True, "tricks.condition": condition, "train.epochs": 30,
                                "train.steps_per_epoch": 10, "train.lr": 0.003, "model.g_hidden": [32],
                                "model.noise_dim": 8})
    split = load_split(cfg.data)
    result = fit(cfg, split, progress=False)
    G = result.generator.eval()
    c = torch.arange(300) % 3
    with torch.no_grad():
        x_fake = G(torch.rand(300, 8), c)
    judge = LogisticRegression(max_iter=1000).fit(split.x_test.flatten(1).numpy(), split.y_test.numpy())
    agreement = (judge.predict(x_fake.flatten(1).numpy()) == c.numpy()).mean()
    assert agreement > 0.8, agreement  # chance is 1/3
    assert "loss_cond_d" in result.history[0]


def test_unconditional_generator_ignores_classes_and_conditional_needs_them():
    cfg = replace(Config(), **{"model.g_hidden": [8], "model.noise_dim": 4})
    G = build_generator(cfg.model, (1, 8, 8), "tanh", tricks(), 3)
    assert G.condition.dim == 0 and G(torch.rand(2, 4)).shape == (2, 1, 8, 8)
    Gc = build_generator(cfg.model, (1, 8, 8), "tanh", tricks(conditional=True), 3)
    assert Gc.condition.dim == 3 and Gc(torch.rand(2, 4), torch.tensor([0, 2])).shape == (2, 1, 8, 8)


def test_noise_std_per_hidden_layer():
    cfg = replace(Config(), **{"model.d_hidden": [8, 4], "model.input_noise": 0.1,
                               "model.hidden_noise_per_layer": [0.2, 0.7]}).model
    D = build_discriminator(cfg, (6,), 2)
    assert [m.std for m in D.modules() if isinstance(m, GaussianNoise)] == [0.1, 0.2, 0.7]
    default = build_discriminator(replace(Config(), **{"model.d_hidden": [8, 4]}).model, (6,), 2)
    assert [m.std for m in default.modules() if isinstance(m, GaussianNoise)] == [0.3, 0.5, 0.5]
    with pytest.raises(ConfigError, match="model.hidden_noise_per_layer needs"):
        build_discriminator(replace(Config(), **{"model.hidden_noise_per_layer": [0.1]}).model, (6,), 2)
