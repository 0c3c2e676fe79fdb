"""Training: the loop, optimizers, logging, pictures (checkpoints and distributed beside it)."""
from .trainer import Trainer, TrainingError, train

__all__ = ["Trainer", "TrainingError", "train"]
