"""srlm-harness: train and evaluate small reasoning language models, reproducibly."""

__version__ = "0.1.0"
