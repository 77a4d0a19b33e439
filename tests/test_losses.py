"""The losses are pure functions of logits; checked against numbers computed by hand."""
import math

import torch

from ssgan.nets.losses import (
    feature_matching_loss,
    non_saturating_loss,
    real_fake_loss,
    real_logit,
    supervised_loss,
    unsupervised_loss,
)


def test_real_logit_with_fixed_fake_logit_is_logsumexp():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # Z = 1 + 3 = 4
    assert torch.allclose(real_logit(logits, 2), torch.tensor([math.log(4.0)]))


def test_explicit_fake_logit_subtracts_it():
    logits = torch.tensor([[0.0, math.log(3.0), math.log(2.0)]])  # D(real) = 4 / (4 + 2)
    r = real_logit(logits, 2)
    assert torch.allclose(torch.sigmoid(r), torch.tensor([4.0 / 6.0]))


def test_explicit_fake_logit_at_zero_equals_fixed_zero():
    logits = torch.randn(5, 4)
    with_fake = torch.cat([logits, torch.zeros(5, 1)], dim=1)
    assert torch.allclose(unsupervised_loss(logits, logits, 4), unsupervised_loss(with_fake, with_fake, 4))


def test_supervised_loss_is_cross_entropy_of_real_classes():
    logits = torch.tensor([[2.0, 0.0, 5.0]])  # third column: explicit fake logit, ignored
    expected = -math.log(math.exp(2.0) / (math.exp(2.0) + 1.0))
    assert math.isclose(supervised_loss(logits, torch.tensor([0]), 2).item(), expected, rel_tol=1e-6)


def test_real_fake_loss_from_one_logsumexp_over_both_batches_is_the_unsupervised_loss():
    torch.manual_seed(0)
    logits = torch.randn(14, 4) * 3  # 6 real rows, then 8 generated ones (explicit fake logit: column 3)
    r_real, r_fake = real_logit(logits, 3).split([6, 8])
    t_real, t_fake = torch.rand(6), torch.zeros(8)
    assert torch.allclose(real_fake_loss(r_real, r_fake), unsupervised_loss(logits[:6], logits[6:], 3))
    assert torch.allclose(real_fake_loss(r_real, r_fake, t_real, t_fake),
                          unsupervised_loss(logits[:6], logits[6:], 3, t_real, t_fake))


def test_unsupervised_loss_by_hand():
    # real: Z = e^1 + e^1 -> D = 2e/(2e+1); fake: Z = 2 -> 1 - D = 1/3
    logits_real = torch.tensor([[1.0, 1.0]])
    logits_fake = torch.tensor([[0.0, 0.0]])
    d_real = 2 * math.e / (2 * math.e + 1)
    expected = -math.log(d_real) - math.log(1.0 / 3.0)
    assert math.isclose(unsupervised_loss(logits_real, logits_fake, 2).item(), expected, rel_tol=1e-6)


def test_losses_stay_finite_for_logits_of_plus_minus_1000():
    big = torch.tensor([[1000.0, -1000.0], [-1000.0, -1000.0]], requires_grad=True)
    for loss in (
        unsupervised_loss(big, big, 2),
        supervised_loss(big, torch.tensor([1, 0]), 2),
        non_saturating_loss(big, 2),
    ):
        loss.backward()
        assert torch.isfinite(loss)
        assert torch.isfinite(big.grad).all()
        big.grad = None
    # A confident real on real data and a confident fake on fake data cost ~0; the reverse ~1000.
    sure_real, sure_fake = torch.tensor([[1000.0, 0.0]]), torch.tensor([[-1000.0, -1000.0]])
    assert unsupervised_loss(sure_real, sure_fake, 2).item() < 1e-6
    assert math.isclose(unsupervised_loss(sure_fake, sure_real, 2).item(), 2000.0, rel_tol=1e-3)


def test_feature_matching_is_squared_distance_of_batch_means():
    real = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # mean (2, 3)
    fake = torch.tensor([[0.0, 0.0], [0.0, 2.0]])  # mean (0, 1)
    assert feature_matching_loss(real, fake).item() == 8.0
    assert feature_matching_loss(real, real).item() == 0.0


def test_non_saturating_loss_by_hand():
    logits_fake = torch.tensor([[0.0]])  # Z = 1 -> D = 1/2 -> -log D = log 2
    assert math.isclose(non_saturating_loss(logits_fake, 1).item(), math.log(2.0), rel_tol=1e-6)
