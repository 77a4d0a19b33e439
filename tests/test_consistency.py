"""The consistency methods (vat, mean_teacher, pi_model): the same network as supervised, no generator, a
consistency term on the unlabeled batch. Their losses on hand-computed values, VAT's power iteration on a
known quadratic, the invariant weight 0 => the supervised step, and the modes through the CLI, the estimator
and a comparison."""
import json
import math
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ssgan.cli import cli
from ssgan.config import load_config, replace
from ssgan.data.splits import load_split
from ssgan.errors import ConfigError
from ssgan.estimator import SSGANClassifier
from ssgan.nets.losses import consistency_loss, kl_divergence
from ssgan.nets.vat import adversarial_direction, unit_rows
from ssgan.training.ema import EMA
from ssgan.training.fit import fit
from ssgan.training.step import build_nets, check_plan, train_step
from ssgan.training.tricks import sigmoid_rampup

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs/smoke.yaml")
CONSISTENCY = ["vat", "mean_teacher", "pi_model"]


# -- the losses -----------------------------------------------------------------------------------------------
def test_kl_divergence_on_hand_computed_values():
    p, q = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])  # (1/2, 1/2) and (3/4, 1/4)
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert kl_divergence(p, q, 2).item() == pytest.approx(expected, rel=1e-6)
    assert kl_divergence(p, p, 2).item() == 0.0
    assert kl_divergence(q, p, 2).item() != pytest.approx(expected)  # not symmetric


def test_consistency_loss_is_zero_for_equal_predictions_and_grows_with_their_distance():
    a = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    assert consistency_loss(a, a, 3).item() == 0.0
    assert consistency_loss(a, a + 7.0, 3).item() == pytest.approx(0.0, abs=1e-12)  # softmax ignores a shift
    # rows (1, 0) vs (1/2, 1/2): || p_a - p_b ||^2 = 1/2; and a row with equal predictions: 0; mean 1/4
    big, even = torch.tensor([[100.0, 0.0], [0.0, 0.0]]), torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    assert consistency_loss(big, even, 2).item() == pytest.approx(0.25, rel=1e-6)
    distances = [consistency_loss(a, a + torch.tensor([s, 0.0, 0.0]), 3).item() for s in (0.5, 1.0, 2.0, 4.0)]
    assert distances == sorted(distances) and distances[0] > 0


def test_only_the_first_k_logits_count():
    a, b = torch.tensor([[1.0, 2.0, 50.0]]), torch.tensor([[1.0, 2.0, -50.0]])  # they differ in the K+1-th only
    assert consistency_loss(a, b, 2).item() == 0.0 and kl_divergence(a, b, 2).item() == 0.0


def test_sigmoid_rampup():
    assert sigmoid_rampup(0, 0) == 1.0 and sigmoid_rampup(5, 0) == 1.0
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5.0))
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(100, 100) == 1.0 and sigmoid_rampup(1000, 100) == 1.0


# -- VAT's perturbation -----------------------------------------------------------------------------------------
def test_power_iteration_finds_the_dominant_direction_of_a_known_quadratic():
    """For logits W x, KL(p(x) || p(x + r)) ~ r^T H r / 2 with H = W^T (diag(p) - p p^T) W: the power iteration
    converges to H's dominant eigenvector, and one iteration already leans towards it."""
    torch.manual_seed(0)
    W = torch.randn(4, 6, dtype=torch.float64)
    x = torch.randn(1, 6, dtype=torch.float64)
    p = torch.softmax(x @ W.T, dim=1)[0]
    H = W.T @ (torch.diag(p) - torch.outer(p, p)) @ W
    top = torch.linalg.eigh(H).eigenvectors[:, -1]
    logits_of = lambda v: v @ W.T  # noqa: E731
    many = adversarial_direction(logits_of, x, logits_of(x), 4, xi=1e-6, iterations=30)[0]
    assert abs(float(many @ top)) == pytest.approx(1.0, abs=1e-6)
    cos_one = [abs(float(adversarial_direction(logits_of, x, logits_of(x), 4, 1e-6, 1)[0] @ top)) for _ in range(50)]
    cos_random = [abs(float(unit_rows(torch.randn(1, 6, dtype=torch.float64))[0] @ top)) for _ in range(50)]
    assert np.mean(cos_one) > np.mean(cos_random) + 0.2


def test_the_direction_is_a_unit_vector_per_row_and_leaves_the_model_alone():
    model = torch.nn.Linear(5, 3)
    x = torch.randn(4, 5)
    d = adversarial_direction(lambda v: model(v), x, model(x), 3, xi=1e-3, iterations=2)
    assert d.shape == x.shape and torch.allclose(d.norm(dim=1), torch.ones(4))
    assert all(p.grad is None for p in model.parameters())


# -- the step -------------------------------------------------------------------------------------------------
def steps(cfg, split, seed=0, n=3):
    torch.manual_seed(seed)
    nets = build_nets(cfg, split.input_shape, split.num_classes, torch.device("cpu"))
    ema = EMA(nets.D, 0.9)
    nets.teacher = ema.model if cfg.mode == "mean_teacher" else None
    x_lb, y_lb = split.x_train[split.labeled_idx], split.y_train[split.labeled_idx]
    for i in range(n):
        losses = train_step(nets, cfg, x_lb, y_lb, split.x_train[10 * i : 10 * i + 10], None)
        ema.update(nets.D)
    return nets, losses


@pytest.mark.parametrize("mode", CONSISTENCY)
def test_weight_zero_is_the_supervised_step(mode):
    """With its weight 0 (and D's noise off, for vat) a consistency mode takes the supervised steps; with a
    weight the unlabeled batch changes D."""
    base = load_config(SMOKE, ["tricks.dropout=0.3"] if mode != "vat" else ["tricks.gaussian_noise=false"])
    split = load_split(base.data)
    supervised, _ = steps(replace(base, mode="supervised"), split)
    zero, losses = steps(replace(base, mode=mode, **{f"ssl.{mode}.weight": 0.0}), split)
    assert losses["loss_consistency"].item() > 0 and zero.G is None
    if mode == "vat":  # dropout draws differ between the modes (more forwards): only the noise-free ones compare
        for (name, p), q in zip(zero.D.named_parameters(), supervised.D.parameters()):
            torch.testing.assert_close(p, q, msg=name)
    weighted, _ = steps(replace(base, mode=mode, **{f"ssl.{mode}.weight": 10.0}), split)
    reference = zero if mode != "vat" else supervised
    assert any(not torch.allclose(p, q, atol=1e-5) for p, q in zip(weighted.D.parameters(), reference.D.parameters()))


@pytest.mark.parametrize("mode", CONSISTENCY)
def test_a_consistency_mode_trains_and_its_term_is_logged_per_epoch(mode):
    cfg = load_config(SMOKE, [f"mode={mode}", "train.epochs=3", f"ssl.{mode}.rampup_steps=10"])
    result = fit(cfg, load_split(cfg.data), progress=False)
    assert result.generator is None and result.stop_reason == "completed"
    assert all(h["loss_consistency"] >= 0 for h in result.history)
    assert "loss_unsup" not in result.history[0] and "loss_g" not in result.history[0]


def test_bad_consistency_settings_are_one_line_errors():
    split = load_split(load_config(SMOKE).data)
    with pytest.raises(ConfigError, match="mean_teacher needs train.ema_decay > 0"):
        check_plan(load_config(SMOKE, ["mode=mean_teacher", "train.ema_decay=0"]), split)
    with pytest.raises(ConfigError, match="pi_model compares two noisy predictions, but D has no noise"):
        check_plan(load_config(SMOKE, ["mode=pi_model", "tricks.gaussian_noise=false"]), split)
    with pytest.raises(ConfigError, match="ssl.vat.eps"):
        load_config(SMOKE, ["ssl.vat.eps=0"])
    with pytest.raises(ConfigError, match="ssl.pi_model.gaussian_noise must be true or false"):
        load_config(SMOKE, ["ssl.pi_model.gaussian_noise=maybe"])
    with pytest.raises(ConfigError, match="mode"):
        load_config(SMOKE, ["mode=fixmatch"])


# -- through the CLI, the estimator and a comparison -------------------------------------------------------------
def test_ssgan_train_mode_vat_records_one_run_with_its_model(tmp_path, store_uri):
    result = CliRunner().invoke(cli, ["-q", "train", "-c", SMOKE, "--mode", "vat", "--out", str(tmp_path),
                                      "--set", f"tracking.uri={store_uri}"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["mode"] == "vat" and summary["model_uri"]
    run = mlflow.MlflowClient(store_uri).get_run(summary["run_id"])
    assert run.data.params["mode"] == "vat" and run.data.params["ssl.vat.eps"] == "2.0"
    assert "loss_consistency" in run.data.metrics
    model = mlflow.pyfunc.load_model(summary["model_uri"])
    x = load_split(load_config(SMOKE).data).x_test[:5].numpy()
    assert len(model.predict(x)) == 5


@pytest.mark.parametrize("mode", ["mean_teacher", "pi_model"])
def test_the_estimator_trains_a_consistency_mode(mode):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    y_partial = y.copy()
    y_partial[np.random.default_rng(0).permutation(len(y))[100:]] = -1  # 100 labels
    clf = SSGANClassifier(mode=mode, hidden_layers=(32,), epochs=3, random_state=0).fit(X, y_partial)
    assert clf.score(X, y) > 0.5


def test_a_comparison_reports_ssgan_s_paired_gain_over_each_consistency_method(tmp_path, store_uri):
    out = tmp_path / "cmp"
    result = CliRunner().invoke(cli, ["-q", "compare", "-c", SMOKE, "--labels", "20", "--seeds", "2", "--methods",
                                      "ssgan,supervised,vat,mean_teacher", "--out", str(out),
                                      "--set", f"tracking.uri={store_uri}", "--set", "tracking.experiment=cons"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    budget = summary["by_budget"][0]
    assert [m["method"] for m in budget["methods"]] == ["ssgan", "supervised", "vat", "mean_teacher"]
    assert set(budget["gains"]) == {"vat", "mean_teacher"} and budget["gains"]["vat"]["n"] == 2
    report = (out / "report.md").read_text()
    assert "| ssgan minus |" in report and "| vat |" in report and "ssgan - supervised:" in report
