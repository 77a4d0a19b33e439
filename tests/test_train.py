"""The training step and loop: invariants rather than accuracy numbers."""
import copy

import pytest
import torch

from ssgan.config import Config, replace
from ssgan.data import load_split
from ssgan.train import EMA, build_nets, fit, train_step
from ssgan.tricks import lr_factor

TINY = {"model.d_hidden": [16, 8], "model.g_hidden": [16], "model.noise_dim": 4,
        "train.batch_size": 10, "train.steps_per_epoch": 3, "train.device": "cpu"}


def tiny_cfg(npz_path, **changes) -> Config:
    return replace(Config(), **{"data.name": "npz", "data.path": str(npz_path), "data.labels": 6, **TINY, **changes})


def _step_params(cfg, split, seed=0):
    torch.manual_seed(seed)
    nets = build_nets(cfg, split.input_shape, split.num_classes, torch.device("cpu"))
    x_lb, y_lb = split.x_train[split.labeled_idx], split.y_train[split.labeled_idx]
    x_ulb, x_ulb2 = split.x_train[:10], split.x_train[10:20]
    torch.manual_seed(seed + 100)
    losses = train_step(nets, cfg, x_lb, y_lb, x_ulb, x_ulb2)
    return nets, losses


def test_ssgan_step_with_zero_unsupervised_weight_equals_supervised_step(npz_path):
    cfg = tiny_cfg(npz_path, **{"train.unsup_weight": 0.0})
    split = load_split(cfg.data)
    ssgan, losses = _step_params(cfg, split)
    supervised, sup_losses = _step_params(replace(cfg, mode="supervised"), split)
    assert supervised.G is None and ssgan.G is not None
    assert set(losses) >= {"loss_d", "loss_unsup", "loss_g"} and "loss_g" not in sup_losses
    for (name, p), q in zip(ssgan.D.named_parameters(), supervised.D.parameters()):
        assert torch.equal(p, q), name
    # ... and with a non-zero weight the unlabeled and generated data do change D.
    changed, _ = _step_params(replace(cfg, **{"train.unsup_weight": 1.0}), split)
    assert any(not torch.equal(p, q) for p, q in zip(changed.D.parameters(), supervised.D.parameters()))


def test_generator_step_changes_only_the_generator(npz_path):
    cfg = tiny_cfg(npz_path)
    split = load_split(cfg.data)
    torch.manual_seed(0)
    nets = build_nets(cfg, split.input_shape, split.num_classes, torch.device("cpu"))
    g_before = copy.deepcopy(nets.G.state_dict())
    train_step(nets, cfg, split.x_train[:6], split.y_train[:6].clamp(min=0), split.x_train[:10], split.x_train[10:20])
    assert any(not torch.equal(v, nets.G.state_dict()[k]) for k, v in g_before.items())


@pytest.mark.parametrize("gen_loss", ["feature_matching", "non_saturating"])
def test_same_seed_same_result_on_cpu(npz_path, gen_loss):
    cfg = tiny_cfg(npz_path, **{"train.epochs": 2, "train.gen_loss": gen_loss})
    split = load_split(cfg.data)
    a, b = fit(cfg, split, progress=False), fit(cfg, split, progress=False)
    assert [h["loss_d"] for h in a.history] == [h["loss_d"] for h in b.history]
    for p, q in zip(a.classifier.parameters(), b.classifier.parameters()):
        assert torch.equal(p, q)
    c = fit(replace(cfg, **{"train.seed": 1}), split, progress=False)
    assert [h["loss_d"] for h in a.history] != [h["loss_d"] for h in c.history]


def test_fit_records_per_epoch_metrics_and_calls_back(npz_path):
    cfg = tiny_cfg(npz_path, **{"train.epochs": 3})
    seen = []
    result = fit(cfg, load_split(cfg.data), on_epoch=lambda e, m, g: seen.append((e, m, g)), progress=False)
    assert [e for e, _, _ in seen] == [1, 2, 3]
    assert result.stop_reason == "completed" and len(result.history) == 3
    assert {"loss_d", "loss_g", "loss_sup", "loss_unsup", "test_accuracy", "lr"} <= set(result.history[0])
    assert seen[0][2] is result.generator
    assert not result.classifier.training


def test_supervised_mode_learns_the_tiny_task(npz_path):
    cfg = tiny_cfg(npz_path, mode="supervised", **{"train.epochs": 5, "train.lr": 0.01})
    result = fit(cfg, load_split(cfg.data), progress=False)
    assert result.generator is None
    assert result.history[-1]["test_accuracy"] > 0.9  # three trivially separable classes


def test_linear_decay_schedule():
    cfg = replace(Config(), **{"train.lr_schedule": "linear_decay", "train.decay_start": 0.5})
    assert lr_factor(cfg.train, cfg.tricks, 0, 100) == 1.0 and lr_factor(cfg.train, cfg.tricks, 49, 100) == 1.0
    assert lr_factor(cfg.train, cfg.tricks, 75, 100) == pytest.approx(0.5)
    assert lr_factor(cfg.train, cfg.tricks, 100, 100) == 0.0
    cos = replace(Config(), **{"train.lr_schedule": "cosine"})
    assert lr_factor(cos.train, cos.tricks, 0, 10) == 1.0 and lr_factor(cos.train, cos.tricks, 5, 10) == pytest.approx(0.5)


def test_ema_tracks_weights_with_warmup():
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = EMA(model, decay=0.99)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # first update: decay = min(0.99, 2/11)
    assert ema.model.weight.item() == pytest.approx(1 - 2 / 11)
    for _ in range(2000):
        ema.update(model)
    assert ema.model.weight.item() == pytest.approx(1.0, abs=1e-6)


def test_cuda_device_without_a_gpu_is_a_config_error(npz_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from ssgan.errors import ConfigError

    cfg = tiny_cfg(npz_path, **{"train.device": "cuda"})
    with pytest.raises(ConfigError, match="train.device=cuda"):
        fit(cfg, load_split(cfg.data), progress=False)
