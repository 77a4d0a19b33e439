"""ssgan: semi-supervised GAN classifiers (Salimans et al. 2016) with a supervised baseline, tracked in MLflow."""
__version__ = "0.1.0"
