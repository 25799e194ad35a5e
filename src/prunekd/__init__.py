"""prunekd: filter pruning + knowledge distillation as a reproducible experiment DAG."""

__version__ = "0.1.0"
