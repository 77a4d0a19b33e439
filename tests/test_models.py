"""Network shapes and the K+1 output convention."""
import pytest
import torch

from ssgan.config import ModelConfig, TricksConfig
from ssgan.errors import ConfigError
from ssgan.nets.models import build_discriminator, build_generator, sample_noise


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("fake_logit,outputs", [("fixed_zero", 10), ("explicit", 11)])
def test_discriminator_returns_logits_and_features(arch, fake_logit, outputs):
    cfg = ModelConfig(arch=arch, fake_logit=fake_logit, d_hidden=(64, 32), conv_width=8)
    D = build_discriminator(cfg, (1, 28, 28), 10)
    logits, features = D(torch.randn(5, 1, 28, 28))
    assert logits.shape == (5, outputs)
    assert features.dim() == 2 and features.shape[0] == 5


def test_salimans_mlp_layer_sizes():
    D = build_discriminator(ModelConfig(), (1, 28, 28), 10)
    sizes = [m.v.shape for m in D.modules() if hasattr(m, "v")]
    assert sizes == [(1000, 784), (500, 1000), (250, 500), (250, 250), (250, 250), (10, 250)]


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("scale,lo,hi", [("tanh", -1.0, 1.0), ("sigmoid", 0.0, 1.0)])
def test_generator_output_shape_and_range(arch, scale, lo, hi):
    cfg = ModelConfig(arch=arch, g_hidden=(32,), noise_dim=16, conv_width=8)
    G = build_generator(cfg, (1, 8, 8), scale)
    x = G(sample_noise(6, 16, "cpu"))
    assert x.shape == (6, 1, 8, 8)
    assert lo <= x.min().item() and x.max().item() <= hi


def test_generator_for_tabular_features():
    G = build_generator(ModelConfig(g_hidden=(16,), noise_dim=4), (13,), "tanh")
    assert G(sample_noise(3, 4, "cpu")).shape == (3, 13)


def test_noise_only_in_training_mode():
    D = build_discriminator(ModelConfig(d_hidden=(16,)), (4,), 2)
    x = torch.randn(3, 4)
    D.eval()
    assert torch.equal(D(x)[0], D(x)[0])
    D.train()
    assert not torch.equal(D(x)[0], D(x)[0])


def test_mlp_noise_layers_draw_from_one_call_with_their_own_std():
    from torch.profiler import profile

    from ssgan.nets.models import GaussianNoise

    torch.manual_seed(0)
    cfg = ModelConfig(d_hidden=(64, 32), input_noise=0.3, hidden_noise_per_layer=(0.5, 0.2))
    D = build_discriminator(cfg, (48,), 3).train()
    added = {}  # noise layer -> what it added to its input
    for m in D.modules():
        if isinstance(m, GaussianNoise):
            m.register_forward_hook(lambda mod, inp, out: added.__setitem__(mod, (out - inp[0]).detach()))
    x = torch.randn(4000, 48)
    with profile() as prof:
        D(x)
    assert sum(e.name == "aten::normal_" for e in prof.events()) == 1  # one draw per forward (3 without the bank)
    noise = [added[m] for m in D.modules() if isinstance(m, GaussianNoise)]
    assert [n.shape[1] for n in noise] == [48, 64, 32]
    for n, std in zip(noise, (0.3, 0.5, 0.2)):
        assert abs(n.std().item() - std) < 0.02 * std and abs(n.mean().item()) < 0.01
    z = [n[:, :32] / s for n, s in zip(noise, (0.3, 0.5, 0.2))]  # standard normals, same shape
    for i in range(3):  # every layer gets its own draws, and so does every row
        assert not torch.allclose(z[i][0], z[i][1], atol=1e-3)
        for j in range(i):
            assert abs(torch.corrcoef(torch.stack([z[i].flatten(), z[j].flatten()]))[0, 1]) < 0.05
    D(torch.randn(4000, 48))
    assert not torch.equal(noise[0], added[next(m for m in D.modules() if isinstance(m, GaussianNoise))])


def test_predictions_are_probabilities_over_the_real_classes_only():
    from ssgan.nets.inference import predict_proba

    D = build_discriminator(ModelConfig(d_hidden=(16,), fake_logit="explicit"), (4,), 3).eval()
    probs = predict_proba(D, torch.randn(7, 4), 3)  # the explicit K+1-th (fake) logit is left out
    assert probs.shape == (7, 3)
    assert torch.allclose(probs.sum(1), torch.ones(7))


def test_conv_needs_images_divisible_by_4():
    with pytest.raises(ConfigError, match="model.arch=conv"):
        build_discriminator(ModelConfig(arch="conv"), (1, 10, 10), 3)
    with pytest.raises(ConfigError, match="model.arch=conv"):
        build_discriminator(ModelConfig(arch="conv"), (13,), 3)


def test_data_dependent_init_normalizes_pre_activations():
    from ssgan.nets.models import WeightNormLinear, init_from_data

    layer = WeightNormLinear(6, 4)
    x = torch.randn(256, 6) * 5 + 3
    init_from_data(layer, x)
    out = layer(x)
    assert torch.allclose(out.mean(0), torch.zeros(4), atol=1e-4)
    assert torch.allclose(out.std(0), torch.ones(4), atol=1e-3)
    assert not layer._init_pending  # only the one batch


def test_weight_norm_layer_backward_is_the_gradient_of_its_formula():
    from ssgan.nets.models import WeightNormLinear, WeightNormLinearFn

    torch.manual_seed(0)
    args = (torch.randn(5, 7, dtype=torch.float64, requires_grad=True),
            torch.randn(3, 7, dtype=torch.float64, requires_grad=True),
            (torch.rand(3, dtype=torch.float64) + 0.5).requires_grad_(),
            torch.randn(3, dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(lambda *a: WeightNormLinearFn.apply(*a)[0], args)
    # ... and the layer computes g * (v / ||v||) x + b
    layer = WeightNormLinear(7, 3).double()
    x = args[0].detach()
    expected = x @ (layer.g[:, None] * layer.v / layer.v.norm(dim=1, keepdim=True)).t() + layer.b
    assert torch.allclose(layer(x), expected)


@pytest.mark.parametrize("std", [0.05, 0.1])
def test_weight_norm_directions_start_at_the_configured_scale(std):
    # Salimans et al.'s MNIST code starts v at N(0, 0.1^2), their CIFAR code at N(0, 0.05^2)
    D = build_discriminator(ModelConfig(wn_init_std=std), (1, 28, 28), 10)
    first, *_, head = [m for m in D.modules() if hasattr(m, "v")]
    assert first.v.std().item() == pytest.approx(std, rel=0.01)  # 784k draws
    assert head.v.std().item() == pytest.approx(std, rel=0.1)  # 2.5k draws
    with pytest.raises(ConfigError, match="model.wn_init_std applies to the mlp"):
        build_discriminator(ModelConfig(arch="conv", wn_init_std=std + 1), (1, 28, 28), 10)


def test_generator_batch_norm_without_scale_trains_only_its_shift():
    G = build_generator(ModelConfig(g_hidden=(32, 32), noise_dim=8, g_bn_scale=False), (20,), "sigmoid")
    bns = [m for m in G.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(bns) == 2 and all(not m.weight.requires_grad and m.bias.requires_grad for m in bns)
    G(sample_noise(16, 8, "cpu")).pow(2).mean().backward()
    assert all(m.weight.grad is None and m.bias.grad.abs().sum() > 0 for m in bns)
    assert all(m.weight.requires_grad for m in build_generator(ModelConfig(g_hidden=(32,), noise_dim=8), (20,), "sigmoid").modules()
               if isinstance(m, torch.nn.BatchNorm1d))  # the default learns both
    with pytest.raises(ConfigError, match="model.g_bn_scale=false applies to G's batch norm"):
        build_generator(ModelConfig(g_bn_scale=False), (20,), "sigmoid", TricksConfig(g_norm="none"))
