"""Several seeds trained at once (ssgan/training/seeds.py): the same training as one seed at a time."""
import copy
import dataclasses

import pytest
import torch

from ssgan.config import replace
from ssgan.data.splits import load_split
from ssgan.errors import ConfigError
from ssgan.training.resume import load_state, save_state
from ssgan.training.seeds import SeedStack, fit_seeds, seeds_id, stack_nets
from ssgan.training.seeds import train_step as seeds_train_step
from ssgan.training.step import build_nets, train_step
from ssgan.training.fit import fit
from ssgan.nets.inference import predict_proba
from tests.test_train import tiny_cfg


def _nets(cfg, split, seeds):
    out = []
    for s in seeds:
        torch.manual_seed(s)
        out.append(build_nets(cfg, split.input_shape, split.num_classes, torch.device("cpu"), x_init=split.x_train[:20]))
    return out


@pytest.mark.parametrize("extra", [{}, {"train.gen_loss": "non_saturating"}, {"train.fused_g": True},
                                   {"mode": "supervised"}, {"tricks.conditional": True},
                                   {"model.wn_scale": "fixed", "model.data_init": True},
                                   {"model.g_bn_scale": False, "model.wn_init_std": 0.1}])
def test_a_step_of_stacked_seeds_equals_a_step_of_each_seed_alone(npz_path, extra):
    # Noise off and vmap's randomness "same": every seed draws the z a lone step draws after the same
    # manual_seed, so the stacked update must equal each seed's own update.
    cfg = replace(tiny_cfg(npz_path, **{"tricks.gaussian_noise": False}), **extra)
    split = load_split(cfg.data)
    alone = _nets(cfg, split, [0, 1, 2])
    stacked = stack_nets(cfg, copy.deepcopy(alone))
    x_lb, y_lb = split.x_train[split.labeled_idx[:5]], split.y_train[split.labeled_idx[:5]]
    batches = [(x_lb, y_lb, split.x_train[10 * s : 10 * s + 10], split.x_train[30 + 10 * s : 40 + 10 * s]) for s in range(3)]
    for step in range(2):  # the second step also checks Adam's state
        losses = []
        for nets, batch in zip(alone, batches):
            torch.manual_seed(step)
            losses.append(train_step(nets, cfg, *batch))
        torch.manual_seed(step)
        together = seeds_train_step(stacked, cfg, *(torch.stack(b) for b in zip(*batches)), randomness="same")
        for k, v in together.items():
            assert v.shape == (3,)
            assert torch.allclose(v, torch.stack([l[k] for l in losses]), rtol=1e-5, atol=1e-6), k
    for i, nets in enumerate(alone):
        for stack, net in ((stacked.D, nets.D), (stacked.G, nets.G)):
            if net is None:
                continue
            member = stack.member(i).state_dict()
            for name, p in net.state_dict().items():
                assert torch.allclose(member[name].float(), p.float(), rtol=1e-4, atol=1e-6), f"seed {i}: {name}"


@pytest.mark.parametrize("extra", [{}, {"model.arch": "conv", "model.conv_width": 4},
                                   {"tricks.conditional": True, "tricks.label_smoothing": True, "tricks.label_flip": True}])
def test_one_seed_at_once_trains_exactly_as_fit(npz_path, extra):
    # the same init, batches, noise draws (vmap draws one seed's as fit does), schedule, EMA and evaluation
    cfg = tiny_cfg(npz_path, **{"train.epochs": 2, "train.seed": 3, "data.split_seed": 3, **extra})
    split = load_split(cfg.data)
    alone = fit(cfg, split, progress=False)
    stacked = fit_seeds(cfg, [split], [3], progress=False)
    assert len(stacked.histories[0]) == len(alone.history) == 2
    for a, b in zip(alone.history, stacked.histories[0]):
        for k in ("loss_d", "loss_g", "loss_sup", "loss_unsup", "test_accuracy", "test_accuracy_raw", "lr",
                  "gen_classes"):  # the collapse monitor too: one epoch loop serves both paths
            assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-7), k
        # (a ratio of feature spreads: the conv D's noise-moved biases shift it by a few %)
        assert b["gen_diversity"] == pytest.approx(a["gen_diversity"], rel=1e-3 if cfg.model.arch == "mlp" else 0.1)
    if cfg.model.arch == "mlp":  # (a conv D's biases before batch norm get zero gradients: Adam moves them by noise)
        for p, q in zip(alone.classifier.state_dict().values(), stacked.classifiers[0].state_dict().values()):
            assert torch.allclose(p, q, rtol=1e-4, atol=1e-6)


def test_seed_stack_gives_each_member_back(npz_path):
    cfg = tiny_cfg(npz_path)
    split = load_split(cfg.data)
    nets = _nets(cfg, split, [3, 4])
    stack = SeedStack([n.D for n in nets])
    assert len(stack) == 2 and all(p.shape[0] == 2 for p in stack.parameters())
    for i, n in enumerate(nets):
        assert all(torch.equal(a, b) for a, b in zip(stack.member(i).state_dict().values(), n.D.state_dict().values()))
    fixed = SeedStack([n.D for n in _nets(replace(cfg, **{"model.wn_scale": "fixed"}), split, [3, 4])])
    assert [p.requires_grad for p in fixed.parameters()] == [p.requires_grad for p in fixed.base.parameters()]
    assert not all(p.requires_grad for p in fixed.parameters())  # the hidden layers' scales stay fixed


def test_fit_seeds_trains_each_seed_on_its_own_split(npz_path):
    cfg = tiny_cfg(npz_path, **{"train.epochs": 2})
    splits = [load_split(replace(cfg, **{"data.split_seed": s}).data) for s in (0, 1)]
    assert not torch.equal(splits[0].labeled_idx, splits[1].labeled_idx)
    seen = []
    result = fit_seeds(cfg, splits, [0, 1], on_epoch=lambda e, m, _g: seen.append((e, m)), progress=False)
    assert result.stop_reason == "completed" and [e for e, _ in seen] == [1, 2]
    assert len(result.histories) == 2 and all(len(h) == 2 for h in result.histories)
    assert {"loss_d", "loss_g", "loss_sup", "loss_unsup", "test_accuracy", "test_accuracy_raw", "lr"} <= set(result.histories[0][0])
    assert result.histories[0][-1]["loss_d"] != result.histories[1][-1]["loss_d"]  # independent seeds
    for clf, history in zip(result.classifiers, result.histories):  # the reported accuracy is the classifier's
        assert not clf.training
        predicted = predict_proba(clf, splits[0].x_test, splits[0].num_classes).argmax(1)
        assert history[-1]["test_accuracy"] == pytest.approx((predicted == splits[0].y_test).double().mean().item())
    assert all(g is not None and not g.training for g in result.generators)


def test_fit_seeds_hands_each_seeds_generator_to_on_epoch(npz_path):
    """What the tracked path draws its per-epoch sample grids from, as fit's on_epoch gives its generator."""
    cfg = tiny_cfg(npz_path, **{"train.epochs": 1})
    splits = [load_split(replace(cfg, **{"data.split_seed": s}).data) for s in (0, 1)]
    seen = []
    result = fit_seeds(cfg, splits, [0, 1], on_epoch=lambda e, m, g: seen.append([g[0], g[1]]), progress=False)
    for given, final in zip(seen[0], result.generators):
        assert not given.training
        assert all(torch.equal(a, b) for a, b in zip(given.state_dict().values(), final.state_dict().values()))
    supervised = fit_seeds(replace(cfg, mode="supervised"), splits, [0, 1], progress=False,
                           on_epoch=lambda e, m, g: seen.append([g[0]]))
    assert seen[-1] == [None] and supervised.generators == [None, None]


def test_fit_seeds_evaluates_compared_weight_averages_per_seed(npz_path):
    cfg = tiny_cfg(npz_path, **{"train.epochs": 2, "train.ema_decay": 0.9, "train.ema_compare": [0.9, 0.5]})
    splits = [load_split(replace(cfg, **{"data.split_seed": s}).data) for s in (0, 1)]
    result = fit_seeds(cfg, splits, [0, 1], progress=False)
    for history in result.histories:
        for m in history:
            assert m["test_accuracy_ema0.9"] == m["test_accuracy"] and 0 <= m["test_accuracy_ema0.5"] <= 1


def test_fit_seeds_rejects_mismatched_inputs(npz_path):
    cfg = tiny_cfg(npz_path)
    split = load_split(cfg.data)
    with pytest.raises(ConfigError, match="one split per seed"):
        fit_seeds(cfg, [split], [0, 1])
    with pytest.raises(ConfigError, match="distinct seeds"):
        fit_seeds(cfg, [split, split], [0, 0])
    with pytest.raises(ConfigError, match="label budget"):
        fit_seeds(cfg, [split, load_split(replace(cfg, **{"data.labels": 9}).data)], [0, 1])
    with pytest.raises(ConfigError, match="train.compile"):
        fit_seeds(replace(cfg, **{"train.compile": True}), [split, split], [0, 1])
    with pytest.raises(ConfigError, match="train.precision=bf16"):
        fit_seeds(replace(cfg, **{"train.precision": "bf16"}), [split, split], [0, 1])


def test_the_watchdog_counts_each_seed_on_its_own():
    from ssgan.config import WatchdogConfig
    from ssgan.training.watchdog import Watchdog

    wd = Watchdog(WatchdogConfig(d_loss_below=0.01, patience=3), torch.device("cpu"), seeds=3)
    for _ in range(3):  # seed 1's D loss stays near 0, seed 2's turns NaN once
        loss_d = torch.tensor([0.7, 0.001, float("nan") if _ == 1 else 0.6])
        wd.observe({"loss_d": loss_d, "loss_g": torch.ones(3)})
    assert wd.verdicts() == [None, "d_loss_collapse", "non_finite_loss"]
    wd.reset(1)
    assert wd.verdicts() == [None, None, "non_finite_loss"]


def _saving(path, cfg, splits):
    """on_state as `ssgan train --seeds` uses it: the state goes to a file."""
    return lambda state: save_state(path, state, cfg, seeds_id([0, 1], splits))


def _failing(split):
    """The same split with every labeled example's label set to cross-entropy's ignore index: its supervised
    loss is NaN from its first step on, a seed whose training fails."""
    y = split.y_train.clone()
    y[split.labeled_idx] = -100
    return dataclasses.replace(split, y_train=y)


def test_the_watchdog_stops_a_failing_seed_and_the_others_train_on_as_if_alone(npz_path, tmp_path):
    cfg = tiny_cfg(npz_path, **{"train.epochs": 3, "train.ema_decay": 0.9})
    splits = [load_split(replace(cfg, **{"data.split_seed": s}).data) for s in (0, 1)]
    healthy = fit_seeds(cfg, splits, [0, 1], progress=False)
    # The same seeds, stopped after epoch 1 and resumed with seed 1 failing from epoch 2 on.
    path = tmp_path / "state.pt"

    def stop_after_epoch_1(epoch, metrics, generators):  # (Ctrl-C while epoch 2's metrics are handed on: the state is epoch 1's)
        if epoch == 2:
            raise KeyboardInterrupt

    first = fit_seeds(cfg, splits, [0, 1], on_epoch=stop_after_epoch_1, on_state=_saving(path, cfg, splits),
                      progress=False)
    saved = load_state(path)
    assert first.stop_reason == "interrupted" and saved["epoch"] == 1
    seen = []
    result = fit_seeds(cfg, [splits[0], _failing(splits[1])], [0, 1], resume=saved, progress=False,
                       on_epoch=lambda e, m, _g: seen.append(m))
    assert result.stop_reason == "completed" and result.epochs_done == 3
    assert result.stop_reasons == ["completed", "non_finite_loss"] and "NaN" in result.stop_messages[1]
    assert [len(h) for h in result.histories] == [3, 1]  # seed 1's history ends at its last good epoch
    assert [m[1] for m in seen] == [None, None]  # on_epoch: nothing for the stopped seed
    # seed 0 is untouched by seed 1's failure: the same metrics and weights as in the healthy run
    for a, b in zip(healthy.histories[0], result.histories[0]):
        for k in ("loss_d", "loss_g", "test_accuracy", "test_accuracy_raw"):
            assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-7), k
    for p, q in zip(healthy.classifiers[0].state_dict().values(), result.classifiers[0].state_dict().values()):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-6)
    # seed 1 is held at its last good epoch: its classifier is the weight average saved after epoch 1
    at_epoch_1 = {k: v[1] for k, v in saved["emas"][0]["model"].items()}
    for name, value in result.classifiers[1].state_dict().items():
        assert torch.equal(value, at_epoch_1[name.replace(".", "__")]), name
    assert all(torch.isfinite(p).all() for p in result.generators[1].parameters())


def test_a_stopped_seed_stays_stopped_when_training_resumes(npz_path, tmp_path):
    cfg = tiny_cfg(npz_path, **{"train.epochs": 3})
    splits = [load_split(replace(cfg, **{"data.split_seed": s}).data) for s in (0, 1)]
    path = tmp_path / "state.pt"

    def stop_after_epoch_2(epoch, metrics, generators):
        if epoch == 3:
            raise KeyboardInterrupt

    fit_seeds(cfg, [splits[0], _failing(splits[1])], [0, 1], on_epoch=stop_after_epoch_2,
              on_state=_saving(path, cfg, splits), progress=False)
    saved = load_state(path)  # (a file: the record of stopped seeds must survive torch.save / weights_only load)
    assert saved["epoch"] == 2 and saved["stopped"][1]["reason"] == "non_finite_loss"
    result = fit_seeds(cfg, [splits[0], _failing(splits[1])], [0, 1], resume=saved, progress=False)
    assert result.stop_reasons == ["completed", "non_finite_loss"] and [len(h) for h in result.histories] == [3, 0]


def test_the_watchdog_stops_training_when_every_seed_has_failed(npz_path):
    cfg = tiny_cfg(npz_path, **{"train.epochs": 3})
    splits = [_failing(load_split(replace(cfg, **{"data.split_seed": s}).data)) for s in (0, 1)]
    result = fit_seeds(cfg, splits, [0, 1], progress=False)
    assert result.stop_reason == "non_finite_loss" and result.stop_reasons == ["non_finite_loss"] * 2
    assert result.epochs_done == 0 and result.histories == [[], []]
    assert all(torch.isfinite(p).all() for clf in result.classifiers for p in clf.parameters())


def test_cli_seeds_record_a_seed_the_watchdog_stopped_and_exit_3(tmp_path, npz_path, store_uri,
                                                                second_fails_in_epoch_2):
    """`ssgan train --seeds 0,1` when the watchdog stops seed 1 at the end of epoch 2: seed 0's run completes,
    seed 1's run holds its one good epoch and says why, and the command says so in one line and exits 3, as a
    single run stopped by the watchdog does."""
    import json

    import mlflow
    from click.testing import CliRunner

    from ssgan.cli import cli

    out = tmp_path / "out"
    args = second_fails_in_epoch_2(npz_path, out, store_uri, "--seeds", "0,1")
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 3
    [line] = [x for x in result.stderr.splitlines() if "stopped early" in x]
    assert line.startswith("seed 1 stopped early (d_loss_collapse)")
    seed0, seed1 = (json.loads((out / f"summary-seed{s}.json").read_text()) for s in (0, 1))
    assert (seed0["stop_reason"], seed0["epochs_completed"]) == ("completed", 3)
    assert (seed1["stop_reason"], seed1["epochs_completed"]) == ("d_loss_collapse", 1)
    client = mlflow.MlflowClient(store_uri)
    assert client.get_run(seed1["run_id"]).data.tags["stop_reason"] == "d_loss_collapse"
    assert [m.step for m in client.get_metric_history(seed1["run_id"], "lr")] == [1]
    assert not (out / "train_state.pt").exists()  # training completed: nothing to resume


def test_in_warn_mode_the_watchdog_warns_per_seed_and_stops_none(npz_path):
    cfg = tiny_cfg(npz_path, **{"train.epochs": 2, "train.steps_per_epoch": 4, "tricks.watchdog.action": "warn",
                                "tricks.watchdog.d_loss_below": 1e9, "tricks.watchdog.patience": 2})
    splits = [load_split(replace(cfg, **{"data.split_seed": s}).data) for s in (0, 1)]
    result = fit_seeds(cfg, splits, [0, 1], progress=False)
    assert result.stop_reasons == ["completed", "completed"] and [len(h) for h in result.histories] == [2, 2]
    # every D loss counts as collapsed: each seed is warned after steps 2 and 4 of each epoch (a warning starts
    # its count afresh, so the check at the epoch's end, 0 steps later, is quiet)
    assert result.watchdog_warnings == [["d_loss_collapse"] * 4] * 2


def test_the_collapse_monitor_stops_each_seed_as_it_stops_a_single_run(npz_path):
    """A diversity floor of 1 (as varied as the data), above these tiny generators': `fit` stops for mode collapse at its first epoch's check, and
    so does every seed trained at once (each judged on its own generator)."""
    cfg = tiny_cfg(npz_path, **{"train.epochs": 3, "tricks.watchdog.min_diversity": 1.0})
    splits = [load_split(replace(cfg, **{"data.split_seed": s}).data) for s in (0, 1)]
    alone = fit(replace(cfg, **{"data.split_seed": 0}), splits[0], progress=False)
    together = fit_seeds(cfg, splits, [0, 1], progress=False)
    assert alone.stop_reason == together.stop_reason == "mode_collapse"
    assert together.stop_reasons == ["mode_collapse", "mode_collapse"]
    assert len(alone.history) == 0 and together.histories == [[], []]
