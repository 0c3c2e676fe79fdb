"""Training: the loop, optimizers, logging, pictures (checkpoints and distributed beside it)."""
from .checkpoint import CheckpointError, RunInterrupted, load_checkpoint, resume
from .trainer import Trainer, TrainingError, train

__all__ = ["Trainer", "TrainingError", "train", "CheckpointError", "RunInterrupted",
           "load_checkpoint", "resume"]
