"""A training run: what it builds from its config (codec, network, projectors: ``build``) and its directory, the one
owner of what a checkpoint holds (``run_dir``), and the checkpoint file itself: its digest and its safe loading
(``checkpoint_file``)."""
from study.run.build import Denoiser, align_depth, build_codec, build_denoiser, build_sit_for, patch_size
from study.run.checkpoint_file import (TRUST_OLD_ENV, CorruptCheckpointError, UnverifiedCheckpointError,
                                       read_checkpoint)
from study.run.run_dir import (LENGTH_FIELDS, SamplingModel, append_log, checkpoint_path, earlier_kept_steps,
                               kept_checkpoint, latent_stats_dict, latest_checkpoint, load_sampling_model,
                               prune_checkpoints, read_config, restore_checkpoint, resume_checkpoint, run_hash,
                               save_checkpoint, truncate_log, write_run_header)

__all__ = ["Denoiser", "build_codec", "build_sit_for", "build_denoiser", "align_depth", "patch_size",
           "run_hash", "LENGTH_FIELDS", "checkpoint_path", "latest_checkpoint", "resume_checkpoint", "kept_checkpoint",
           "earlier_kept_steps", "prune_checkpoints", "save_checkpoint", "restore_checkpoint", "write_run_header",
           "truncate_log", "append_log", "read_config", "latent_stats_dict", "SamplingModel", "load_sampling_model",
           "read_checkpoint", "CorruptCheckpointError", "UnverifiedCheckpointError", "TRUST_OLD_ENV"]
