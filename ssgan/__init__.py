"""ssgan: semi-supervised GAN classifiers (Salimans et al. 2016) with a supervised baseline, tracked in MLflow."""
__version__ = "0.1.0"
__all__ = ["SSGANClassifier"]


def __getattr__(name: str):
    """`from ssgan import SSGANClassifier` without importing torch and scikit-learn for every `import ssgan`."""
    if name == "SSGANClassifier":
        from ssgan.estimator import SSGANClassifier

        return SSGANClassifier
    raise AttributeError(f"module 'ssgan' has no attribute {name!r}")
