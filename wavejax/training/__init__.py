"""Training: pure steps (`steps`), the epoch loop (`loop`), its monitors (`hooks`), checkpoints,
preemption, the device mesh, the workdir record, sweeps; `train_fold` and `cross_validate`."""

from wavejax.training.loop import FoldData, FoldTrainer, ResumePoint
from wavejax.training.trainer import cross_validate, load_fold_data, train_fold

__all__ = ["FoldData", "FoldTrainer", "ResumePoint", "cross_validate", "load_fold_data",
           "train_fold"]
