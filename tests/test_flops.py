"""The FLOP counter of bench/throughput.py against a hand count."""
import torch

from ssgan.config import Config, replace
from ssgan.training.flops import matmul_peak, step_flops
from ssgan.training.step import build_nets

# D: 64 -> 16 -> 8 -> 3 classes (weight-normed), G: 4 -> 16 (batch norm) -> 64 (weight-normed)
TINY = {"model.d_hidden": [16, 8], "model.g_hidden": [16], "model.noise_dim": 4, "train.device": "cpu",
        "tricks.gaussian_noise": False}
D_LAYERS = [(64, 16), (16, 8), (8, 3)]
G_LAYERS = [(4, 16), (16, 64)]


def mac(rows, layers):
    return sum(2 * rows * i * o for i, o in layers)


def test_flops_of_one_ssgan_step_match_a_hand_count():
    cfg = replace(Config(), **TINY)
    nets = build_nets(cfg, (64,), 3, torch.device("cpu"))
    b_lb, b_ulb, b2 = 5, 7, 9
    x = torch.rand(b_lb + b_ulb + b2, 64)
    y = torch.randint(3, (b_lb,))
    flops = step_flops(nets, cfg, x[:b_lb], y, x[b_lb:b_lb + b_ulb], x[b_lb + b_ulb:])

    rows = b_lb + 2 * b_ulb  # fused D pass: labeled + unlabeled + as many generated rows as unlabeled ones
    d_update = (mac(b_ulb, G_LAYERS)  # G(z), no gradient
                + mac(rows, D_LAYERS)  # D forward
                + mac(rows, D_LAYERS)  # weight gradients of every D layer
                + mac(rows, D_LAYERS[1:]))  # input gradients, except into the data
    g_update = (mac(b2, G_LAYERS)  # G(z)
                + 2 * mac(b2, D_LAYERS)  # D(G(z)) and D(x_ulb2), the latter without gradient
                + mac(b2, D_LAYERS[:-1])  # feature matching: input gradients through D's body only, no weight gradients
                + mac(b2, G_LAYERS)  # G's weight gradients
                + mac(b2, G_LAYERS[1:]))  # G's input gradients, except into z
    assert flops == d_update + g_update


def test_supervised_step_counts_only_the_labeled_pass():
    cfg = replace(Config(), **{**TINY, "mode": "supervised"})
    nets = build_nets(cfg, (64,), 3, torch.device("cpu"))
    x, y = torch.rand(5, 64), torch.randint(3, (5,))
    assert step_flops(nets, cfg, x, y) == 2 * mac(5, D_LAYERS) + mac(5, D_LAYERS[1:])


def test_counting_does_not_train_the_networks():
    cfg = replace(Config(), **TINY)
    nets = build_nets(cfg, (64,), 3, torch.device("cpu"))
    before = [p.clone() for p in nets.D.parameters()]
    x = torch.rand(10, 64)
    step_flops(nets, cfg, x[:4], torch.randint(3, (4,)), x[4:7], x[7:])
    assert all(torch.equal(p, q) for p, q in zip(before, nets.D.parameters()))


def test_matmul_peak_is_a_positive_rate():
    assert matmul_peak(torch.device("cpu"), n=64, seconds=0.05) > 0
