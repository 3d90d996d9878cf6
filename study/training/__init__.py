"""Training: the loop (``loop``: one run, or a group of runs sharing data and the encoder forward), what each step
sees (``batches``: the data order and the step's random draws), a run's parts (``runs``), which runs may share a
group (``group``) and preemption (``preemption``: the scheduler's signal -> a checkpoint at the step boundary)."""
from study.training.batches import DrawSpec, StepBatches, StepData, global_batch_indices, open_train_dataset, step_noise
from study.training.group import SHARED_KEYS, check_group
from study.training.loop import REPAE_LOG_KEYS, NonFiniteLossError, train, train_group
from study.training.preemption import PreemptionSave
from study.training.runs import (Run, RunCodec, adamw, autocast_for, build_run, ddp_bucket_mb, encoder_dims, run_codecs,
                                 update_ema)

__all__ = ["train", "train_group", "NonFiniteLossError", "REPAE_LOG_KEYS", "check_group", "SHARED_KEYS",
           "global_batch_indices", "StepBatches", "step_noise", "open_train_dataset", "PreemptionSave", "Run",
           "RunCodec", "run_codecs", "build_run", "autocast_for", "update_ema", "encoder_dims", "StepData", "DrawSpec",
           "adamw", "ddp_bucket_mb"]
