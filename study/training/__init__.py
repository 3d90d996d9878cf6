"""The training loop (``loop``: one run, or a group of runs sharing data and the encoder forward) and preemption
(``preemption``: the scheduler's signal -> a checkpoint at the step boundary)."""
from study.training.loop import (SHARED_KEYS, NonFiniteLossError, check_group, global_batch_indices, open_train_dataset,
                                 step_noise, train, train_group)
from study.training.preemption import PreemptionSave

__all__ = ["train", "train_group", "check_group", "SHARED_KEYS", "NonFiniteLossError", "global_batch_indices",
           "step_noise", "open_train_dataset", "PreemptionSave"]
