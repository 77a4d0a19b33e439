"""Networks: the K+1-class discriminator and the generator (MLP and conv), the losses as pure functions of
logits and features, inference with a trained classifier (no training code), and the collapse monitor."""
from ssgan.nets.inference import Ensemble, predict_proba
from ssgan.nets.losses import (conditional_entropy, feature_matching_loss, non_saturating_loss, real_fake_loss,
                               real_logit, supervised_loss, unsupervised_loss)
from ssgan.nets.models import build_discriminator, build_generator, check_tricks_apply, sample_noise
from ssgan.nets.monitor import collapse_metrics

__all__ = ["build_discriminator", "build_generator", "check_tricks_apply", "sample_noise", "supervised_loss",
           "unsupervised_loss", "real_fake_loss", "real_logit", "conditional_entropy", "feature_matching_loss",
           "non_saturating_loss", "predict_proba", "Ensemble", "collapse_metrics"]
