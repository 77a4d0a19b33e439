"""The training step and loop: invariants rather than accuracy numbers."""
import copy

import pytest
import torch

from ssgan.config import Config, replace
from ssgan.data.splits import load_split
from ssgan.training.ema import EMA
from ssgan.training.batches import IndexStream
from ssgan.training.step import build_nets, train_step
from ssgan.training.fit import fit
from ssgan.nets.inference import predict_proba
from ssgan.training.tricks import lr_factor

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
    # Gaussian noise off: the fused ssgan pass draws its noise for all rows at once, so only the
    # noise-free updates can be compared.
    cfg = tiny_cfg(npz_path, **{"train.unsup_weight": 0.0, "tricks.gaussian_noise": False})
    split = load_split(cfg.data)
    ssgan, losses = _step_params(cfg, split)
    supervised, sup_losses = _step_params(replace(cfg, mode="supervised"), split)
    assert supervised.G is None and ssgan.G is not None
    assert set(losses) >= {"loss_d", "loss_unsup", "loss_g"} and "loss_g" not in sup_losses
    assert torch.allclose(losses["loss_sup"], sup_losses["loss_sup"])
    for (name, p), q in zip(ssgan.D.named_parameters(), supervised.D.parameters()):
        assert torch.allclose(p, q, atol=1e-6), name
    # ... and with a non-zero weight the unlabeled and generated data do change D.
    changed, _ = _step_params(replace(cfg, **{"train.unsup_weight": 1.0}), split)
    assert any(not torch.allclose(p, q, atol=1e-4) for p, q in zip(changed.D.parameters(), supervised.D.parameters()))


@pytest.mark.parametrize("fused_g", [False, True])
@pytest.mark.parametrize("gen_loss", ["feature_matching", "non_saturating"])
@pytest.mark.parametrize("extra", [{}, {"tricks.label_smoothing": True, "model.fake_logit": "explicit"},
                                   {"tricks.conditional": True, "tricks.label_flip": True}])
def test_fused_discriminator_pass_equals_separate_passes(npz_path, gen_loss, extra, fused_g):
    # D's update in one pass (fused_d), and G's feature matching with real and generated rows in one
    # pass of D (fused_g), against a pass per batch. (Not with spectral norm: its power iteration runs
    # once per forward, so once per fused update.)
    cfg = tiny_cfg(npz_path, **{"tricks.gaussian_noise": False, "train.gen_loss": gen_loss,
                                "train.fused_g": fused_g, **extra})
    split = load_split(cfg.data)
    fused, f_losses = _step_params(cfg, split)
    separate, s_losses = _step_params(replace(cfg, **{"train.fused_d": False}), split)
    assert fused.fused and not separate.fused and fused.fused_g == fused_g and not separate.fused_g
    for k in s_losses:
        assert torch.allclose(f_losses[k], s_losses[k], rtol=1e-5, atol=1e-6), k
    for net in ("D", "G"):
        for (name, p), q in zip(getattr(fused, net).named_parameters(), getattr(separate, net).parameters()):
            assert torch.allclose(p, q, rtol=1e-4, atol=1e-6), f"{net}.{name}"


def test_batch_norm_discriminator_keeps_separate_passes(npz_path):
    cfg = tiny_cfg(npz_path, **{"tricks.d_norm": "batch", "train.fused_g": True})
    nets = build_nets(cfg, (1, 8, 8), 3, torch.device("cpu"))
    assert not nets.fused and not nets.fused_g  # real and fake batches keep their own batch statistics


def test_generator_pass_is_fused_by_default_on_a_gpu_only(npz_path):
    # fused_g saves kernels (a GPU's limit) but adds input-gradient FLOPs (a CPU's limit)
    nets = build_nets(tiny_cfg(npz_path), (1, 8, 8), 3, torch.device("cpu"))
    assert nets.fused and not nets.fused_g


def test_generator_step_leaves_the_discriminator_trainable(npz_path):
    cfg = tiny_cfg(npz_path)
    split = load_split(cfg.data)
    nets, _ = _step_params(cfg, split)
    assert all(p.requires_grad for p in nets.D.parameters())  # `frozen` restores them


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
    split = load_split(cfg.data)
    result = fit(cfg, split, on_epoch=lambda e, m, g: seen.append((e, m, g)), progress=False)
    assert [e for e, _, _ in seen] == [1, 2, 3]
    assert result.stop_reason == "completed" and len(result.history) == 3
    assert {"loss_d", "loss_g", "loss_sup", "loss_unsup", "test_accuracy", "lr"} <= set(result.history[0])
    predicted = predict_proba(result.classifier, split.x_test, split.num_classes).argmax(1)
    assert result.history[-1]["test_accuracy"] == pytest.approx((predicted == split.y_test).double().mean().item())
    assert seen[0][2] is result.generator
    assert not result.classifier.training


def test_compared_weight_averages_are_evaluated_without_changing_training(npz_path):
    cfg = tiny_cfg(npz_path, **{"train.epochs": 2, "train.ema_decay": 0.9})
    split = load_split(cfg.data)
    plain = fit(cfg, split, progress=False)
    compared = fit(replace(cfg, **{"train.ema_compare": [0.9, 0.5]}), split, progress=False)
    for a, b in zip(plain.history, compared.history):
        assert {k: a[k] for k in ("loss_d", "loss_g", "test_accuracy", "test_accuracy_raw")} == \
               {k: b[k] for k in ("loss_d", "loss_g", "test_accuracy", "test_accuracy_raw")}
        assert b["test_accuracy_ema0.9"] == b["test_accuracy"]  # the same decay: the same average
        assert "test_accuracy_ema0.5" in b and "test_accuracy_ema0.5" not in a
    for p, q in zip(plain.classifier.parameters(), compared.classifier.parameters()):
        assert torch.equal(p, q)  # the returned classifier is still ema_decay's


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


@pytest.mark.parametrize("switch", [{"train.precision": "bf16"}, {"train.compile": True}, {"train.precision": "tf32"},
                                    {"train.precision": "bf16", "model.arch": "conv", "model.conv_width": 4}])
def test_speed_switches_train_on_cpu_with_the_same_api(npz_path, switch):
    cfg = tiny_cfg(npz_path, **{"train.epochs": 1, **switch})
    split = load_split(cfg.data)
    if cfg.train.compile:
        pytest.importorskip("torch._inductor")
    result = fit(cfg, split, progress=False)
    assert result.stop_reason == "completed" and len(result.history) == 1
    assert all(torch.isfinite(torch.tensor(v)) for v in result.history[0].values())
    probs = predict_proba(result.classifier, split.x_test, split.num_classes)
    assert probs.dtype == torch.float32 and torch.allclose(probs.sum(1), torch.ones(len(probs)))
    assert torch.backends.cuda.matmul.allow_tf32 == (cfg.train.precision == "tf32")  # set per run
    fit(tiny_cfg(npz_path, **{"train.epochs": 1}), split, progress=False)
    assert not torch.backends.cuda.matmul.allow_tf32  # and back to full fp32 for an fp32 run


def test_each_unlabeled_pass_draws_every_example_once():
    stream = IndexStream(60, 20, torch.Generator().manual_seed(0))
    for _ in range(3):  # three passes (epochs of 60 // 20 steps)
        drawn = torch.cat([next(stream) for _ in range(3)])
        assert sorted(drawn.tolist()) == list(range(60))


def test_labeled_batches_larger_than_the_labeled_set_span_passes():
    stream = IndexStream(6, 10, torch.Generator().manual_seed(0))
    batch = next(stream)
    assert len(batch) == 10 and set(batch[:6].tolist()) == set(range(6))


def test_host_memory_batches_give_the_same_training_as_device_resident_ones(npz_path):
    cfg = tiny_cfg(npz_path, **{"train.epochs": 1})
    split = load_split(cfg.data)
    resident = fit(replace(cfg, **{"train.data_on_device": True}), split, progress=False)
    host = fit(replace(cfg, **{"train.data_on_device": False}), split, progress=False)
    assert resident.history[0]["loss_d"] == host.history[0]["loss_d"]


def test_index_batches_are_the_same_whether_drawn_ahead_in_chunks_or_not():
    plain = IndexStream(7, 10, torch.Generator().manual_seed(3))
    ahead = IndexStream(7, 10, torch.Generator().manual_seed(3), torch.device("cpu"), chunk=50)
    for _ in range(20):
        assert torch.equal(next(plain), next(ahead))


def test_learning_rate_schedule_matches_lambda_lr_and_fills_device_tensors_in_place():
    from ssgan.training.tricks import Schedule
    from ssgan.training.tricks import set_lr

    cfg = replace(Config(), **{"train.lr_schedule": "linear_decay", "train.decay_start": 0.5, "tricks.warmup_steps": 3})
    factor = lambda s: lr_factor(cfg.train, cfg.tricks, s, 10)  # noqa: E731
    ours = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    ref = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule, ref_schedule = Schedule([ours], factor), torch.optim.lr_scheduler.LambdaLR(ref, factor)
    for _ in range(10):
        assert ours.param_groups[0]["lr"] == ref.param_groups[0]["lr"]
        ref.step()  # (no gradients: nothing moves; LambdaLR only wants the optimizer stepped first)
        schedule.step()
        ref_schedule.step()
    lr = torch.tensor(0.1)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    set_lr(opt, 0.025)
    assert opt.param_groups[0]["lr"] is lr and float(lr) == pytest.approx(0.025)


def test_cuda_graph_switch_needs_a_cuda_device(npz_path):
    from ssgan.errors import ConfigError

    cfg = tiny_cfg(npz_path)
    assert cfg.train.cuda_graph is None and not build_nets(cfg, (1, 8, 8), 3, torch.device("cpu")).graphed
    with pytest.raises(ConfigError, match="train.cuda_graph=true but the training device is cpu"):
        fit(replace(cfg, **{"train.cuda_graph": True}), load_split(cfg.data), progress=False)
    with pytest.raises(ConfigError, match="train.cuda_graph=true but train.compile is on"):
        build_nets(replace(cfg, **{"train.cuda_graph": True, "train.compile": True}), (1, 8, 8), 3, torch.device("cpu"))
    result = fit(replace(cfg, **{"train.epochs": 1}), load_split(cfg.data), progress=False)
    assert result.cuda_graph == "off"
